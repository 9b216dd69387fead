"""What a criterion's numbers are on, in words, and the range they can take (pure).

A result's estimate and bounds are on the scale of its threshold: a difference (candidate −
production) for a `margin`, a ratio for `max_ratio`, the candidate's own value for `min` /
`max`. The dashboard must say which (an accuracy chart plots a difference, not an accuracy)
and must not draw a bound where the metric cannot go: a confidence sequence that is still
wide says "anything is possible", which for an agreement is [0, 1], not [−3, 5].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from coalmine.analysis.registry import METRICS

__all__ = ["Scale", "clipped_result", "criterion_kinds", "judgement_word", "scale_of"]

Kind = Literal["difference", "ratio", "value"]
_NON_NEGATIVE = frozenset(
    {"latency", "ms", "log_loss", "mae", "rmse", "psi", "js", "cpu", "memory", "mean_abs_diff"}
)


@dataclass(frozen=True)
class Scale:
    kind: Kind
    label: str  # the table's note: what the numbers are, with their unit
    low: float
    high: float
    axis: str = ""  # the same, short enough for a chart's vertical axis


def _kind_of_thresholds(keys: Any) -> Kind | None:
    keys = set(keys)
    if "margin" in keys:
        return "difference"
    if "max_ratio" in keys:
        return "ratio"
    if keys & {"min", "max"}:
        return "value"
    return None


def criterion_kinds(spec: Any) -> dict[str, Kind]:
    """Criterion name -> kind, from a rollout spec as stored (a mapping, maybe partial)."""
    kinds: dict[str, Kind] = {}
    if not isinstance(spec, Mapping):
        return kinds
    for phase in ("shadow", "canary"):
        section = spec.get(phase)
        criteria = section.get("criteria") if isinstance(section, Mapping) else None
        for c in criteria if isinstance(criteria, list) else []:
            if not isinstance(c, Mapping):
                continue
            given = {k for k in ("margin", "max_ratio", "min", "max") if c.get(k) is not None}
            kind = _kind_of_thresholds(given)
            name = c.get("name") or c.get("metric")
            if kind is not None and isinstance(name, str):
                kinds.setdefault(name, kind)
    return kinds


def scale_of(result: Mapping[str, Any], kinds: Mapping[str, Kind], against: str) -> Scale:
    """The scale of one result; `against` names the comparison arm ("production")."""
    metric = str(result.get("metric") or "")
    spec = METRICS.get(metric)
    kind = kinds.get(str(result.get("name"))) or (
        _kind_of_thresholds(spec.defaults) if spec is not None else None
    )
    if kind is None:
        kind = "value" if spec is not None and spec.family == "drift" else "difference"
    proportion = (spec is not None and spec.unit == "pts") or metric == "auc"
    unit = "" if spec is None else spec.unit
    non_negative = proportion or metric in _NON_NEGATIVE or unit in ("ms", "%", "MB")
    short = "prod" if against == "production" else "base"
    if kind == "ratio":
        return Scale(kind, f"{metric}: candidate ÷ {against}", 0.0, math.inf,
                     f"{metric} ratio (cand ÷ {short})")  # fmt: skip
    if kind == "value":
        what = f"{metric} of the candidate"
        if metric == "agreement":
            what = "agreement with production"
        elif spec is not None and spec.family == "drift":
            what = f"{metric}, candidate against {against}"
        suffix = " (fraction, 0–1)" if proportion else f" ({unit})" if unit else ""
        axis = metric + (" (0–1)" if proportion else f" ({unit})" if unit else "")
        return Scale(kind, what + suffix, 0.0 if non_negative else -math.inf,
                     1.0 if proportion else math.inf, axis)  # fmt: skip
    suffix = " (fraction; 0.01 = 1 point)" if proportion else f" ({unit})" if unit else ""
    span = 1.0 if proportion else math.inf
    return Scale(kind, f"{metric}: candidate − {against}{suffix}", -span, span,
                 f"Δ {metric} (cand − {short})")  # fmt: skip


def _clip(value: Any, low: float, high: float) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if math.isnan(value):
        return value
    return min(max(float(value), low), high)


def clipped_result(result: Mapping[str, Any], scale: Scale) -> dict[str, Any]:
    """A copy with the bounds (and estimate) clipped to the feasible range and the scale's
    label under "scale"; `clipped` says whether a bound was outside it."""
    out = dict(result)
    for key in ("estimate", "lower", "upper"):
        out[key] = _clip(result.get(key), scale.low, scale.high)
    lower, upper = result.get("lower"), result.get("upper")
    out["clipped"] = any(
        isinstance(v, int | float) and (v < scale.low or v > scale.high) for v in (lower, upper)
    )
    out["scale"] = scale.label
    return out


def judgement_word(
    judgement: Mapping[str, Any] | None, results: Sequence[Mapping[str, Any]]
) -> str:
    """The verdict in words that keep "it passed" apart from "nothing failed (yet)".

    A PASS overall whose criteria are not all PASS means the step may advance because no
    criterion failed: that is "NOTHING FAILED", not "PASS".
    """
    if not judgement:
        return "—"
    verdict = str(judgement.get("verdict") or "").upper()
    overall = [r for r in results if r.get("slice") in (None, "", "overall")]
    if verdict == "PASS" and any(str(r.get("verdict")).upper() != "PASS" for r in overall):
        return "NOTHING FAILED"
    return verdict or "—"
