"""Intervals, verdicts and the one decision rule every criterion shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Interval:
    """A confidence-sequence interval for a difference, with its point estimate.

    One-sided intervals carry an infinite bound on the side they do not test; an interval
    with no information at all is (-inf, inf).
    """

    lower: float
    upper: float
    estimate: float

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.lower) or math.isfinite(self.upper)

    def to_dict(self) -> dict[str, Any]:
        # JSON has no inf: encode as None so the state round-trips through json.dumps.
        def enc(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"lower": enc(self.lower), "upper": enc(self.upper), "estimate": enc(self.estimate)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        lo = data.get("lower")
        hi = data.get("upper")
        est = data.get("estimate")
        return cls(
            -math.inf if lo is None else float(lo),
            math.inf if hi is None else float(hi),
            math.nan if est is None else float(est),
        )


class Verdict(StrEnum):
    """Outcome of one criterion at one look."""

    PASS = "PASS"  # the CS excludes every value that would be a regression beyond the margin
    FAIL = "FAIL"  # the CS lies entirely in the regression region
    INCONCLUSIVE = "INCONCLUSIVE"  # not enough evidence either way (yet)


def decide_higher_better(interval: Interval, margin: float) -> Verdict:
    """Non-inferiority for a higher-is-better metric, Δ = m_candidate − m_production.

    PASS when L > −ε (the candidate is no worse than ε below production); FAIL when
    U < −ε. By Ville's inequality each error happens with probability ≤ α at any look.
    """
    eps = abs(float(margin))
    if interval.lower > -eps:
        return Verdict.PASS
    if interval.upper < -eps:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


def decide_lower_better(interval: Interval, margin: float) -> Verdict:
    """Non-inferiority for a lower-is-better metric (error rate, latency), Δ = c − p.

    PASS when U < δ; FAIL when L > δ.
    """
    delta = abs(float(margin))
    if interval.upper < delta:
        return Verdict.PASS
    if interval.lower > delta:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE
