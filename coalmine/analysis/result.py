"""What a judgement says: one result per criterion and slice, and the verdict over them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from coalmine.analysis.sequential import Verdict

__all__ = ["CriterionResult", "Judgement", "Verdict"]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class CriterionResult:
    """One criterion judged on all traffic (slice None) or on one slice value.

    `estimate`, `lower`, `upper` are on the scale of `threshold`: a difference
    (candidate − production) for a margin, a ratio for max_ratio, the candidate's own value
    for an absolute limit, the statistic itself for drift and agreement.
    """

    name: str
    metric: str
    slice: str | None
    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    threshold: float
    n_candidate: int
    n_baseline: int
    sentence: str
    critical: bool = False
    must: str | None = None
    candidate_value: float = math.nan
    baseline_value: float = math.nan
    alpha: float = math.nan  # the level this test was run at (after the multiplicity split)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "slice": self.slice,
            "verdict": self.verdict.value,
            "estimate": _num(self.estimate),
            "lower": _num(self.lower),
            "upper": _num(self.upper),
            "threshold": _num(self.threshold),
            "n_candidate": self.n_candidate,
            "n_baseline": self.n_baseline,
            "sentence": self.sentence,
            "critical": self.critical,
            "must": self.must,
            "candidate_value": _num(self.candidate_value),
            "baseline_value": _num(self.baseline_value),
            "alpha": _num(self.alpha),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CriterionResult:
        def f(key: str) -> float:
            v = d.get(key)
            return math.nan if v is None else float(v)

        return cls(
            name=d["name"], metric=d["metric"], slice=d.get("slice"),
            verdict=Verdict(d["verdict"]), estimate=f("estimate"), lower=f("lower"),
            upper=f("upper"), threshold=f("threshold"), n_candidate=int(d["n_candidate"]),
            n_baseline=int(d["n_baseline"]), sentence=d["sentence"],
            critical=bool(d.get("critical")), must=d.get("must"),
            candidate_value=f("candidate_value"), baseline_value=f("baseline_value"),
            alpha=f("alpha"),
        )  # fmt: skip


def combine(results: list[CriterionResult]) -> Verdict:
    """The verdict over all results.

    FAIL when any result (overall or a slice) FAILs: a regression in one slice fails the
    rollout. PASS when every overall result with must="pass" (or unset) PASSes and no
    must="not_fail" result FAILs. Otherwise INCONCLUSIVE. An undecided slice does not
    block a PASS here (a small slice may stay INCONCLUSIVE for ever); `Analysis.judge`
    also holds a PASS back while a slice looks worse than allowed (`Analysis._holding`).
    """
    if any(r.verdict is Verdict.FAIL for r in results):
        return Verdict.FAIL
    overall = [r for r in results if r.slice is None]
    if overall and all(r.verdict is Verdict.PASS or r.must == "not_fail" for r in overall):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


@dataclass
class Judgement:
    verdict: Verdict
    results: list[CriterionResult]
    n_candidate: int
    n_baseline: int
    evaluated_at: float = field(default_factory=time.time)
    notes: list[str] = field(default_factory=list)
    # (criterion, slice) of undecided slice results that look worse than allowed: they hold
    # a PASS back here, and a must="pass" criterion's step in the controller
    held: list[tuple[str, str]] = field(default_factory=list)

    def failing(self) -> list[CriterionResult]:
        """FAIL results, critical ones first, then overall before slices."""
        bad = [r for r in self.results if r.verdict is Verdict.FAIL]
        return sorted(bad, key=lambda r: (not r.critical, r.slice is not None, r.name))

    def overall(self) -> list[CriterionResult]:
        return [r for r in self.results if r.slice is None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "results": [r.to_dict() for r in self.results],
            "n_candidate": self.n_candidate,
            "n_baseline": self.n_baseline,
            "evaluated_at": self.evaluated_at,
            "notes": list(self.notes),
            "held": [list(h) for h in self.held],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Judgement:
        return cls(
            Verdict(d["verdict"]),
            [CriterionResult.from_dict(r) for r in d["results"]],
            int(d["n_candidate"]),
            int(d["n_baseline"]),
            float(d["evaluated_at"]),
            list(d.get("notes", [])),
            [(str(n), str(s)) for n, s in d.get("held", [])],
        )

    def summary(self) -> str:
        """A few lines a person reads: the verdict, then every overall result and failing slice."""
        lines = [
            f"{self.verdict.value}: {self.n_candidate} candidate and {self.n_baseline} "
            f"baseline calls judged"
        ]
        for r in self.overall():
            lines.append(f"  {r.verdict.value:<12} {r.sentence}")
        for r in self.results:
            if r.slice is not None and r.verdict is Verdict.FAIL:
                lines.append(f"  {r.verdict.value:<12} {r.sentence}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
