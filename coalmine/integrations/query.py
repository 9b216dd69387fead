"""What a judge-only request asks (pure): which model, which two versions, which rules.

A judge-only judgement has no Coalmine rollout behind it: Argo Rollouts or Flagger owns the
traffic, so everything the controller would read from its rollout record comes with the
request instead. The spec is an ordinary rollout spec (only the section of `mode` and
`alpha` matter); `weight` is the canary's current share in percent and must be one of the
spec's canary steps, so the step's timing and power floor are the ones the spec states.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from coalmine.config import ConfigError
from coalmine.rollout.spec import RolloutSpec, parse_spec

__all__ = ["JudgeQuery", "make_query"]

Mode = Literal["canary", "shadow"]


@dataclass(frozen=True)
class JudgeQuery:
    model: str
    candidate: str
    baseline: str
    mode: Mode
    spec: RolloutSpec
    weight: float | None  # canary share in percent (one of the spec's steps); None in shadow
    not_before: float | None  # judge only calls logged at or after this time (Unix seconds)
    # the weight the caller stated (not defaulted): only a stated weight is given to rows
    # logged without their split, since a wrong share would bias the comparison
    stated_weight: float | None = None
    where: str = ""  # how the caller names the request's fields ("metadata." for Flagger)

    @property
    def step_index(self) -> int:
        if self.weight is None:
            return 0
        return self.spec.step_weights.index(self.weight)

    def session_key(self) -> tuple[Any, ...]:
        """What an evaluator depends on (the weight only moves the floor, not the data)."""
        spec = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)
        return (self.model, self.candidate, self.baseline, self.mode, spec, self.not_before)


def make_query(
    *,
    model: str,
    candidate: str,
    baseline: str,
    mode: str = "canary",
    spec: Any = None,
    weight: float | None = None,
    not_before: float | None = None,
    where: str = "",
) -> JudgeQuery:
    """A checked JudgeQuery; raises ConfigError naming each bad field (`where` prefixes it)."""
    errors: list[tuple[str, str]] = []
    parsed: RolloutSpec | None = None
    try:
        parsed = parse_spec(spec, f"{where}spec")
    except ConfigError as exc:
        errors += [(f"{where}spec.{p}", r) for p, r in exc.errors]
    if mode not in ("canary", "shadow"):
        errors.append((f"{where}mode", f"must be 'canary' or 'shadow', got {mode!r}"))
    if candidate == baseline:
        errors.append((f"{where}baseline", f"must differ from the candidate ({candidate!r})"))
    if not_before is not None and not math.isfinite(not_before):
        errors.append((f"{where}since", "must be a finite Unix time in seconds"))
    stated = weight if mode == "canary" else None
    if parsed is not None and mode == "canary":
        steps = parsed.step_weights
        if weight is None:
            weight = steps[0]
        elif weight not in steps:
            errors.append(
                (f"{where}weight", f"{weight:g} is not one of the spec's canary steps {steps}")
            )
    elif mode == "shadow":
        weight = None
    if errors or parsed is None:
        raise ConfigError(where or "request", errors)
    return JudgeQuery(
        model=model,
        candidate=candidate,
        baseline=baseline,
        mode="shadow" if mode == "shadow" else "canary",
        spec=parsed,
        weight=weight,
        not_before=not_before,
        stated_weight=stated,
        where=where,
    )
