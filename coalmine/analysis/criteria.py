"""Criteria: what "the candidate is at least as good as production" means, as config.

One `Criterion` per comparison; the rollout spec (YAML), the control API and the SDK all use
these models. Thresholds are in the metric's own units:

- `margin` — non-inferiority ε (higher-is-better metrics: m_cand ≥ m_prod − ε) or δ
  (lower-is-better: e_cand ≤ e_prod + δ). Proportions are fractions: 0.01 = 1 point.
- `max_ratio` — lower-is-better metrics: m_cand ≤ max_ratio × m_prod (latency, loss, CPU).
- `max` / `min` — absolute limits on the candidate's own value (or, for drift and
  agreement, on the comparison itself: PSI ≤ max, agreement ≥ min).
- `margin` on `agreement` / `mean_abs_diff` (shadow with a baseline only) — relative to
  the noise floor: the candidate's agreement with production ≥ a fresh baseline's (same
  version as production, same requests) − margin; |difference| ≤ the baseline's + margin.
- `critical` — the controller acts on a FAIL at once. With `error_classes` (error_rate
  only) any single candidate call whose error class (or `http_<status>`) is listed fails
  the criterion immediately; no statistics are needed for "it crashed".
- `must` — how the controller reads the result: "pass" (must PASS to promote) or
  "not_fail" (INCONCLUSIVE is acceptable); None means the phase's default.

Metrics with no threshold given get the registry default (e.g. accuracy margin 1 point,
latency max_ratio 1.2); the defaults are written into the model so a dump shows them.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coalmine.analysis import registry
from coalmine.config import ConfigError, read_yaml, validate_model

__all__ = [
    "CriteriaFile",
    "Criterion",
    "load_criteria",
    "parse_criteria",
    "unknown_metric_message",
]

THRESHOLDS = ("margin", "max_ratio", "max", "min")
_QUANTILE = re.compile(r"^latency_p(\d+(?:\.\d+)?)$")


def unknown_metric_message(name: str) -> str:
    """Why `name` is not a metric: the closest known name when one is close, and the list.

    "unknown metric 'acuracy'; did you mean 'accuracy'? known: ..."; an unsupported latency
    quantile (latency_p100, latency_p90) names the quantiles there are.
    """
    known = registry.known_names()
    quantile = _QUANTILE.match(name)
    if quantile:
        have = [m for m in registry.METRICS if _QUANTILE.match(m)]
        return (
            f"unknown metric {name!r}: the latency quantiles are {', '.join(have)} "
            "(and latency_mean); p100 (the maximum) has no confidence bound. known: " + known
        )
    suggestion: str | None = None
    if ":" in name:  # a misspelled family keeps what follows it: outcom:clicked
        prefix, rest = name.split(":", 1)
        family = difflib.get_close_matches(prefix.lower(), ["outcome", "user"], n=1, cutoff=0.6)
        if family:
            suggestion = f"{family[0]}:{rest}"
    else:
        close = difflib.get_close_matches(name.lower(), list(registry.METRICS), n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    hint = f"; did you mean {suggestion!r}?" if suggestion else ";"
    return f"unknown metric {name!r}{hint} known: {known}"


class Criterion(BaseModel):
    """One comparison of candidate and production, judged overall and per slice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="a registry name, outcome:<name> or user:<name> (allow-listed)")
    name: str = Field(default="", description="defaults to the metric name")
    margin: float | None = Field(default=None, ge=0, description="non-inferiority ε / δ")
    max_ratio: float | None = Field(default=None, gt=0)
    max: float | None = None
    min: float | None = None
    direction: Literal["higher", "lower"] | None = Field(
        default=None, description="outcome:/user: metrics only; default higher is better"
    )
    critical: bool = False
    error_classes: list[str] = Field(default_factory=list)
    must: Literal["pass", "not_fail"] | None = None
    per_slice: bool = Field(default=True, description="also judge every slice value")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        try:
            registry.spec(value)
        except registry.UnknownMetric as exc:
            # a user:/outcome: name has the right family: the registry says what is wrong
            known_family = value.startswith(("user:", "outcome:"))
            raise ValueError(str(exc) if known_family else unknown_metric_message(value)) from None
        if value.startswith("user:"):
            try:
                registry.load_user_metric(value)
            except registry.UnknownMetric as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("metric"), str):
            return data
        try:
            spec = registry.spec(data["metric"])
        except registry.UnknownMetric:
            return data  # the field validator reports it with its path
        data = dict(data)
        if not data.get("name"):
            data["name"] = data["metric"]
        if data.get("error_classes"):
            data.setdefault("critical", True)
        given = [k for k in THRESHOLDS if data.get(k) is not None]
        if not given and not data.get("error_classes"):
            data.update(spec.defaults)
        return data

    @model_validator(mode="after")
    def _coherent(self) -> Criterion:
        spec = registry.spec(self.metric)
        given = [k for k in THRESHOLDS if getattr(self, k) is not None]
        not_allowed = [k for k in given if k not in spec.allows]
        if not_allowed:
            raise ValueError(
                f"{self.metric} does not take {', '.join(not_allowed)}; "
                f"use {' or '.join(sorted(spec.allows))}"
            )
        if not given and not self.error_classes:
            why = (
                "user metrics have no default threshold (Coalmine cannot know their scale)"
                if spec.family == "user"
                else "it has no default threshold"
            )
            raise ValueError(
                f"{self.metric} needs a threshold: {why}; set one of {sorted(spec.allows)} "
                "(margin: allowed difference from production, max_ratio: allowed ratio, "
                "max/min: limits on the candidate's own value)"
            )
        if self.margin is not None and self.max_ratio is not None:
            raise ValueError("set margin or max_ratio, not both")
        if self.max_ratio is not None and spec.higher_is_better and spec.family != "user":
            raise ValueError(f"max_ratio applies to lower-is-better metrics, not {self.metric}")
        if self.error_classes and self.metric != "error_rate":
            raise ValueError("error_classes applies to metric error_rate only")
        if self.error_classes and not self.critical:
            raise ValueError("error_classes means any occurrence fails: set critical: true")
        if self.direction is not None and spec.family not in ("outcome", "user"):
            raise ValueError("direction applies to outcome:<name> and user: metrics only")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    @property
    def spec(self) -> registry.MetricSpec:
        return registry.spec(self.metric)

    @property
    def higher_is_better(self) -> bool:
        if self.direction is not None:
            return self.direction == "higher"
        return self.spec.higher_is_better


class CriteriaFile(BaseModel):
    """A criteria file: `criteria: [...]` (and optionally `alpha`), or a bare list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    criteria: list[Criterion] = Field(min_length=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _unique_names(self) -> CriteriaFile:
        names = [c.name for c in self.criteria]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate criterion names {duplicates}: give each a name")
        return self


def parse_criteria(data: Any, source: str = "<criteria>") -> CriteriaFile:
    """Validate criteria data; raises ConfigError with (field path, reason) pairs."""
    if isinstance(data, list):
        data = {"criteria": data}
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a list or a mapping")])
    return validate_model(CriteriaFile, data, source)


def load_criteria(path: str | Path) -> CriteriaFile:
    return parse_criteria(read_yaml(path), str(path))


# With a noise floor the default agreement criterion is relative to it. An absolute
# `min: 0.95` fails a model that disagrees with itself more than 5% of the time whatever the
# candidate does; "at most 5 points more disagreement with production than production's own
# fresh instance" asks only what the candidate changed. Why 5 points: a retrained model is a
# different model and is expected to answer some requests differently, so the tolerance is
# the same as the absolute default's (for a deterministic model, floor 0, the two coincide);
# agreement is the label-free signal, and accuracy judges quality itself once labels arrive.
# Teams shipping a refactor that must answer identically set a tighter margin.
NOISE_FLOOR_AGREEMENT_MARGIN = 0.05


def default_criteria(task: str, mode: str, noise_floor: bool = False) -> list[Criterion]:
    """What is judged when no criteria are given (`coalmine analyze`, rollout defaults).

    `noise_floor=True` (a shadow with a baseline): agreement is judged against the
    baseline's agreement with production (`margin: 0.05`) instead of `min: 0.95`.
    """
    out = [Criterion(metric=n) for n in ("error_rate", "latency_p95")]
    out.append(Criterion(metric="accuracy" if task == "classification" else "mae"))
    if mode == "shadow" and task == "classification":
        if noise_floor:
            out.append(Criterion(metric="agreement", margin=NOISE_FLOOR_AGREEMENT_MARGIN))
        else:
            out.append(Criterion(metric="agreement"))
    out.append(Criterion(metric="psi"))
    return out
