"""The power floor of `must: not_fail` canary criteria (pure).

"Nothing failed" on 50 samples says little: a candidate 22 points worse has not had time to
FAIL. So a not_fail criterion advances a canary step only once its confidence sequence rules
out a regression larger than the step's floor: wide at 1% (few users exposed, few samples),
tight at 50%. The default schedule is the planner's (`analysis.plan.default_rule_out`); a
spec overrides it per criterion with `rule_out` (one number for every step, a list with one
entry per step, null entries or `[]` for none). Events then say "no regression larger than
X" instead of "passed".

On the result's scale (CriterionResult: a difference for a margin, a ratio for max_ratio, the
value itself for a limit): higher-is-better margin criteria rule out a drop larger than X
when the lower bound is above −X; lower-is-better ones a rise larger than X when the upper
bound is below X; ratios and limits compare the bound with X itself.
"""

from __future__ import annotations

import math
from typing import Any

from coalmine.analysis.criteria import Criterion
from coalmine.analysis.plan import default_rule_out
from coalmine.rollout.spec import RolloutSpec

__all__ = ["describe", "floor_check", "schedule"]

Schedule = dict[str, tuple[float | None, ...]]


def schedule(spec: RolloutSpec, criteria: list[Criterion]) -> Schedule:
    """Criterion name -> the floor at each canary step (None: no floor at that step).

    `criteria` are the canary's built criteria, in the spec's order when the spec gave them.
    Only `must: not_fail` criteria get floors; tripwires (error classes only) never do.
    """
    given = spec.canary.criteria
    out: Schedule = {}
    for i, c in enumerate(criteria):
        if c.must != "not_fail" or (c.error_classes and c.margin is None and c.max_ratio is None):
            continue
        override: Any = getattr(given[i], "rule_out", None) if given is not None else None
        steps: list[float | None] = []
        for j, st in enumerate(spec.canary.steps):
            if st.weight >= 100:
                steps.append(None)
            elif override is None:
                steps.append(
                    default_rule_out(
                        unit=c.spec.unit,
                        family=c.spec.family,
                        margin=c.margin,
                        max_ratio=c.max_ratio,
                        share_percent=st.weight,
                    )
                )
            elif isinstance(override, list):
                steps.append(override[j] if j < len(override) else None)
            else:
                steps.append(float(override))
        if any(x is not None for x in steps):
            out[c.name] = tuple(steps)
    return out


def _higher_is_better(c: Criterion) -> bool:
    return c.higher_is_better


def describe(c: Criterion, x: float) -> str:
    """X in the criterion's own words: points, a ratio of production, or a value."""
    if c.margin is not None:
        return f"{x * 100:.3g} points" if c.spec.unit == "pts" else f"{x:.3g}"
    if c.max_ratio is not None:
        return f"×{x:.3g} of production's"
    return f"{x:.3g}"


def _bound(x: float, c: Criterion) -> str:
    return "n/a" if not math.isfinite(x) else describe(c, x).removesuffix(" of production's")


def floor_check(result: Any, c: Criterion, x: float) -> tuple[bool, str]:
    """(ruled out, one sentence) for an overall CriterionResult against floor `x`."""
    lower = float(getattr(result, "lower", math.nan))
    upper = float(getattr(result, "upper", math.nan))
    hib = _higher_is_better(c)
    if c.margin is not None:
        ok = lower > -x if hib else upper < x
    else:
        ok = lower > x if hib else upper < x
    if ok:
        return True, f"{c.name}: no regression larger than {describe(c, x)}"
    return False, (
        f"{c.name}: cannot yet rule out a regression larger than {describe(c, x)} "
        f"(confidence sequence {_bound(lower, c)} to {_bound(upper, c)})"
    )
