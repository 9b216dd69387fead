"""The rollout spec: how a candidate is shadowed, ramped, judged and ended.

One pydantic model serves the YAML file (`coalmine rollout start --spec FILE`), the control
API's request body and the SDK. Every field has a default that works, so an empty spec is a
valid rollout: shadow at 100% mirror, then canary steps 1, 5, 25, 50, 100%.

Durations are seconds (a number) or a string such as "30s", "5m", "1h", so tests and demos
can run with second-long steps and production specs stay readable.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from coalmine.config import BaseUrl, read_yaml, validate_model

__all__ = [
    "CanarySpec",
    "CanaryStep",
    "CriterionSpec",
    "Duration",
    "RolloutSpec",
    "ShadowSpec",
    "WebhookSpec",
    "load_spec",
    "parse_spec",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if not match:
            raise ValueError("a duration is seconds or a string like '30s', '5m', '1h'")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(_duration_seconds), Field(ge=0)]
Percent = Annotated[float, Field(gt=0.0, le=100.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CriterionSpec(BaseModel):
    """One criterion in the analysis engine's form (validated by the engine at start).

    Kept open here (extra fields allowed) so the spec carries whatever the engine's
    `Criterion` accepts; `must` is the one field the rollout itself reads: `pass` means a
    step advances only on a PASS, `not_fail` means it advances once the step's minimum
    samples and duration are met and the criterion has not failed.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    metric: str
    must: Literal["pass", "not_fail"] | None = None
    rule_out: float | list[float | None] | None = Field(
        default=None,
        description="canary, must: not_fail only: the regression each step must rule out "
        "before it advances (the power floor), on the criterion's threshold scale: one "
        "number for every step or one entry per step (null: none there); default: the "
        "planner's schedule (analysis.plan.default_rule_out); [] for none",
    )

    @field_validator("rule_out")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if any(v is not None and not v > 0 for v in values):
            raise ValueError("rule_out: every regression to rule out must be > 0")
        return value


class ShadowSpec(Strict):
    """The shadow phase: the candidate sees a copy of production traffic, answers nothing."""

    enabled: bool = True
    mirror_share: Annotated[float, Field(ge=0.0, le=100.0)] = 100.0
    min_duration: Duration = 30.0
    max_duration: Duration = 1800.0
    min_samples: int = Field(default=200, ge=0)
    criteria: list[CriterionSpec] | None = Field(
        default=None, description="None = the engine's shadow defaults"
    )
    then: Literal["canary", "promote", "stop"] = Field(
        default="canary",
        description="after a passed shadow: ramp the canary, replace production directly, "
        "or stop (a shadow-only rollout that changes no traffic)",
    )

    @model_validator(mode="after")
    def _max_after_min(self) -> ShadowSpec:
        if self.max_duration < self.min_duration:
            raise ValueError("max_duration must be at least min_duration")
        return self


class CanaryStep(Strict):
    """One canary weight and, optionally, its own timing (else the canary's defaults)."""

    weight: Percent
    min_duration: Duration | None = None
    max_duration: Duration | None = None
    min_samples: int | None = Field(default=None, ge=0)


def _step_from_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"weight": value}
    return value


StepIn = Annotated[CanaryStep, BeforeValidator(_step_from_number)]


class CanarySpec(Strict):
    """The canary ramp: real users get the candidate's answers, a share at a time."""

    steps: list[StepIn] = Field(
        default_factory=lambda: [CanaryStep(weight=w) for w in (1, 5, 25, 50, 100)],
        min_length=1,
    )
    min_duration: Duration = 30.0
    max_duration: Duration = 1800.0
    min_samples: int = Field(default=100, ge=0)
    on_inconclusive: Literal["fail", "hold"] = Field(
        default="hold",
        description="at a step's max_duration with no decision: fail (roll back) or hold "
        "(pause at the current weight and alert; a person decides)",
    )
    approval_before: list[Percent] = Field(
        default_factory=list, description="step weights that need a manual approve first"
    )
    criteria: list[CriterionSpec] | None = Field(
        default=None, description="None = the engine's canary defaults"
    )
    guard_failures: int = Field(
        default=0,
        ge=0,
        description="consecutive canary failures after which the gateway's fast guard routes "
        "away from the canary during this rollout; 0 = the gateway's default",
    )
    # Off by default: it counts requests, and with a sticky key the request share of a small
    # user population wanders by chance (the demo's 400 users gave a 5% canary 11 users, 2.7%
    # of requests, and held a good rollout). Turn it on where users are many or keys absent.
    sample_ratio_tolerance: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="the sample-ratio guard: a step is held when the odds of a request reaching "
        "the candidate are surely beyond the configured odds times (or divided by) 1 + this "
        "(0.4 is a good value); null (the default) turns the guard off",
    )
    paired: bool = Field(
        default=False,
        description="paired canary: the gateway also mirrors each request the canary answers "
        "to the stable version (off the request path; its answer is logged with role "
        "'paired', never returned), so model-quality criteria (accuracy, log_loss, mae, rmse, "
        "user metrics) are judged on both versions' predictions of the same requests; error "
        "rate and latency stay the canary's own served calls. Costs one extra stable call "
        "per canary request",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [s.weight for s in steps]
        if any(b <= a for a, b in pairwise(weights)):
            raise ValueError(f"step weights must increase, got {weights}")
        for w in weights:
            if abs(w * 100 - round(w * 100)) > 1e-6:
                raise ValueError(f"step weight {w} is not a multiple of 0.01%")
        return steps

    @model_validator(mode="after")
    def _gates_are_steps(self) -> CanarySpec:
        weights = [s.weight for s in self.steps]
        for gate in self.approval_before:
            if gate not in weights:
                raise ValueError(f"approval_before {gate} is not one of the steps {weights}")
        for s in self.steps:
            if self.step_max_duration(s) < self.step_min_duration(s):
                raise ValueError(f"step {s.weight}%: max_duration is below min_duration")
        return self

    def step_min_duration(self, step: CanaryStep) -> float:
        return self.min_duration if step.min_duration is None else step.min_duration

    def step_max_duration(self, step: CanaryStep) -> float:
        return self.max_duration if step.max_duration is None else step.max_duration

    def step_min_samples(self, step: CanaryStep) -> int:
        return self.min_samples if step.min_samples is None else step.min_samples


class WebhookSpec(Strict):
    """Where transitions are POSTed; `secret` signs them (HMAC-SHA256)."""

    url: AnyHttpUrl
    secret: str | None = Field(default=None, description="defaults to $COALMINE_WEBHOOK_SECRET")


class RolloutSpec(Strict):
    """Everything a rollout needs besides the model, the candidate and its URL."""

    shadow: ShadowSpec = ShadowSpec()
    canary: CanarySpec = CanarySpec()
    on_failure: Literal["rollback", "pause"] = Field(
        default="rollback",
        description="on a FAIL: roll back at once, or pause at the current weight and alert",
    )
    baseline: BaseUrl | None = Field(
        default=None,
        description="base URL of a fresh instance of the stable version. It is routed a share "
        "equal to the canary's and the canary is judged against it rather than the "
        "long-running production (Kayenta's practice); in shadow it receives the same "
        "mirrored copies, and production-vs-baseline disagreement is the noise floor the "
        "candidate's disagreement is measured against (Diffy's practice)",
    )
    interval: Duration = Field(default=2.0, gt=0, description="seconds between evaluations")
    alpha: float = Field(default=0.05, gt=0, lt=1)
    webhooks: list[WebhookSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rule_out_fits_the_steps(self) -> RolloutSpec:
        for c in self.shadow.criteria or []:
            if c.rule_out is not None:
                raise ValueError(f"shadow criterion {c.metric}: rule_out applies to the canary")
        n = len(self.canary.steps)
        for c in self.canary.criteria or []:
            if isinstance(c.rule_out, list) and c.rule_out and len(c.rule_out) != n:
                raise ValueError(
                    f"canary criterion {c.metric}: rule_out has {len(c.rule_out)} entries "
                    f"for {n} steps (give one per step, or one number)"
                )
            if c.rule_out is not None and c.must == "pass":
                raise ValueError(f"canary criterion {c.metric}: rule_out applies to not_fail")
        return self

    @model_validator(mode="after")
    def _something_to_do(self) -> RolloutSpec:
        if not self.shadow.enabled and self.shadow.then == "stop":
            raise ValueError("shadow.then 'stop' (shadow-only) needs shadow.enabled")
        if self.shadow.enabled and self.shadow.mirror_share == 0:
            raise ValueError("shadow.mirror_share must be above 0 when shadow is enabled")
        return self

    @property
    def step_weights(self) -> list[float]:
        return [s.weight for s in self.canary.steps]


def parse_spec(data: Any, source: str = "<spec>") -> RolloutSpec:
    """A RolloutSpec from a mapping (None = all defaults); errors carry field paths."""
    return validate_model(RolloutSpec, {} if data is None else data, source)


def load_spec(path: str | Path) -> RolloutSpec:
    return parse_spec(read_yaml(path), str(path))
