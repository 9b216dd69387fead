"""Seeded simulations of the judge at the edge of the allowed region (pure, no I/O).

Each run feeds the statistics an `Analysis` keeps (per-step `Moments`, the latency
histogram) look by look and asks the real `judge()` for a verdict, as the controller does;
the first PASS or FAIL ends the run (the controller acts on it). 0/1 metrics are simulated
as binomial counts per look (their `Moments` are exactly (n, x, x)), latencies value by
value. The tests (tests/analysis/test_false_pass_simulation.py) and
benchmarks/analysis_rates.py use these scenarios; a cross-check test feeds one scenario
through `Analysis.add_batch` and gets the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coalmine.analysis.criteria import Criterion
from coalmine.analysis.judge import Evidence, judge
from coalmine.analysis.metrics import ArmSlice, SliceStats
from coalmine.analysis.sequential import ErrorCountEValue, Moments, Verdict

__all__ = [
    "Outcome",
    "Scenario",
    "pareto",
    "run_binary",
    "run_latency",
    "run_paired",
    "run_paired_values",
    "run_single",
    "shares",
]


@dataclass(frozen=True)
class Scenario:
    """A canary: candidate samples per look, the share (bp) in force at each look, rates."""

    criterion: dict[str, Any]
    looks: int = 100
    per_look: int = 50  # candidate samples per look
    share_bp: Callable[[int], int] = lambda look: 500
    # 0/1 metrics: the rates at look k (candidate, baseline)
    rates: Callable[[int], tuple[float, float]] = lambda look: (0.9, 0.9)
    alpha: float = 0.05
    mode: str = "canary"


@dataclass
class Outcome:
    """Per run: the verdict that ended it (or INCONCLUSIVE) and the candidate n at that look."""

    verdicts: list[Verdict] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)

    def rate(self, verdict: Verdict) -> tuple[int, int]:
        return sum(v is verdict for v in self.verdicts), len(self.verdicts)

    def median_samples(self, verdict: Verdict) -> float:
        """Median candidate samples to `verdict` over all runs (inf if fewer than half)."""
        pairs = zip(self.verdicts, self.samples, strict=True)
        n = sorted(s if v is verdict else math.inf for v, s in pairs)
        return n[len(n) // 2] if n else math.inf


def _set(m: Moments, n: int, total: float, total_sq: float) -> None:
    m.n, m.total, m.total_sq = n, total, total_sq


def _run_once(
    out: Outcome, sc: Scenario, feed: Callable[[int], None], crit: Criterion, ev: Evidence
) -> None:
    """One run: feed look after look until `judge()` gives PASS or FAIL (the controller acts
    on the first), then record that verdict (INCONCLUSIVE if none) and the candidate samples
    fed by then."""
    n = 0
    verdict = Verdict.INCONCLUSIVE
    for look in range(sc.looks):
        feed(look)
        n += sc.per_look
        verdict = judge(crit, ev, sc.alpha).verdict
        if verdict is not Verdict.INCONCLUSIVE:
            break
    out.verdicts.append(verdict)
    out.samples.append(n)


def _baseline_per_look(per_look: int, share_bp: int) -> int:
    s = share_bp / 10_000
    return max(1, round(per_look * (1 - s) / s))


def run_binary(
    sc: Scenario, runs: int, seed: int, *, key: str | None = None, count_test: bool = True
) -> Outcome:
    """Canary runs of a 0/1 metric (accuracy, error rate) through `judge()`.

    An error-rate criterion with `max_ratio` gets the count e-value the Analysis keeps
    (updated with each look's errors at that look's share) unless `count_test=False`.
    """
    crit = Criterion.model_validate(sc.criterion)
    key = key or crit.spec.key
    counted = crit.metric == "error_rate" and crit.max_ratio is not None and count_test
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        stats = SliceStats(ArmSlice(), ArmSlice())
        ev = Evidence(stats, sc.mode)
        if counted:  # what Analysis keeps for error_rate with max_ratio in a canary
            ev.evalue = ErrorCountEValue(float(crit.max_ratio))  # type: ignore[arg-type]

        def feed(look: int, stats: SliceStats = stats, ev: Evidence = ev) -> None:
            step = sc.share_bp(look)
            pc, pb = sc.rates(look)
            nb = _baseline_per_look(sc.per_look, step)
            xc, xb = rng.binomial(sc.per_look, pc), rng.binomial(nb, pb)
            for arm, n, x in ((stats.candidate, sc.per_look, xc), (stats.baseline, nb, xb)):
                m = arm.cell(step).m(key)
                _set(m, m.n + n, m.total + x, m.total_sq + x)
                arm.requests += n
            if ev.evalue is not None:
                ev.evalue.update(int(xc), int(xb), step / 10_000)

        _run_once(out, sc, feed, crit, ev)
    return out


def run_paired(sc: Scenario, runs: int, seed: int, disagreement: float) -> Outcome:
    """Runs of accuracy where both versions answer the same `per_look` requests a look:
    a shadow (`sc.mode` "shadow") or a paired canary (`sc.mode` "canary": the stable version
    also answered each canary request; the judge takes the pairs for quality metrics).

    P(candidate right, production wrong) = (disagreement + Δ)/2 and the reverse
    (disagreement − Δ)/2, Δ = p_c − p_b from `sc.rates`; judged on the paired differences.
    """
    crit = Criterion.model_validate(sc.criterion)
    key = crit.spec.key
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        stats = SliceStats(ArmSlice(), ArmSlice())
        ev = Evidence(stats, sc.mode)
        cross = stats.pairs.cross.setdefault(key, [0.0] * 6)

        def feed(look: int, stats: SliceStats = stats, cross: list[float] = cross) -> None:
            pc, pb = sc.rates(look)
            up, down = (disagreement + pc - pb) / 2, (disagreement - pc + pb) / 2
            both = pb - down
            cells = rng.multinomial(sc.per_look, [both, up, down, 1.0 - both - up - down])
            n_both, n_up, n_down = (float(x) for x in cells[:3])
            c, b = n_both + n_up, n_both + n_down
            for i, add in enumerate((sc.per_look, c, b, c, b, n_both)):
                cross[i] += add
            stats.pairs.pairs += sc.per_look

        _run_once(out, sc, feed, crit, ev)
    return out


def pareto(rng: np.random.Generator, shape: float, scale: float, n: int) -> np.ndarray:
    """Pareto(shape) latencies with minimum `scale` (mean shape/(shape − 1)·scale)."""
    return (rng.pareto(shape, n) + 1.0) * scale


def run_latency(
    sc: Scenario,
    runs: int,
    seed: int,
    sample: Callable[[np.random.Generator, float, int], np.ndarray],
    candidate_scale: float,
) -> Outcome:
    """Canary runs of a latency (or other per-example mean) criterion: the candidate's values
    are the baseline's × scale."""
    crit = Criterion.model_validate(sc.criterion)
    key = crit.spec.key if crit.spec.family != "latency_quantile" else "latency"
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        stats = SliceStats(ArmSlice(), ArmSlice())
        ev = Evidence(stats, sc.mode)

        def feed(look: int, stats: SliceStats = stats) -> None:
            step = sc.share_bp(look)
            nb = _baseline_per_look(sc.per_look, step)
            for arm, n, scale in (
                (stats.candidate, sc.per_look, candidate_scale),
                (stats.baseline, nb, 1.0),
            ):
                x = sample(rng, scale, n)
                m = arm.cell(step).m(key)
                _set(m, m.n + n, m.total + float(x.sum()), m.total_sq + float(np.dot(x, x)))
                arm.latency.add(x)
                arm.requests += n

        _run_once(out, sc, feed, crit, ev)
    return out


Sampler = Callable[[np.random.Generator, int], np.ndarray]


def run_single(
    sc: Scenario, runs: int, seed: int, sample: Sampler, key: str = "abs_diff"
) -> Outcome:
    """Shadow runs of a one-sample stream over the pairs (mean |difference| with `max`/`min`):
    `sample(rng, n)` gives the look's n values."""
    crit = Criterion.model_validate(sc.criterion)
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        stats = SliceStats(ArmSlice(), ArmSlice())
        ev = Evidence(stats, "shadow")
        m = stats.pairs.s(key)

        def feed(look: int, m: Moments = m, stats: SliceStats = stats) -> None:
            x = sample(rng, sc.per_look)
            _set(m, m.n + len(x), m.total + float(x.sum()), m.total_sq + float(np.dot(x, x)))
            stats.pairs.pairs += len(x)

        _run_once(out, sc, feed, crit, ev)
    return out


PairSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def run_paired_values(
    sc: Scenario, runs: int, seed: int, sample: PairSampler, key: str | None = None
) -> Outcome:
    """Shadow runs of a per-example metric judged on same-request pairs (log loss, a user
    metric, |error|): `sample(rng, n)` gives the look's (candidate, baseline) values."""
    crit = Criterion.model_validate(sc.criterion)
    key = key or crit.spec.key
    rng = np.random.default_rng(seed)
    out = Outcome()
    for _ in range(runs):
        stats = SliceStats(ArmSlice(), ArmSlice())
        ev = Evidence(stats, "shadow")

        def feed(look: int, stats: SliceStats = stats) -> None:
            c, b = sample(rng, sc.per_look)
            v = stats.pairs.cross.setdefault(key, [0.0] * 6)
            for i, add in enumerate((len(c), c.sum(), b.sum(), c @ c, b @ b, c @ b)):
                v[i] += float(add)
            for arm, x in ((stats.candidate, c), (stats.baseline, b)):
                m = arm.cell(0).m(key)
                _set(m, m.n + len(x), m.total + float(x.sum()), m.total_sq + float(x @ x))
            stats.pairs.pairs += len(c)

        _run_once(out, sc, feed, crit, ev)
    return out


def shares(schedule: Sequence[tuple[int, int]]) -> Callable[[int], int]:
    """A ramp: [(share_bp, looks), ...] → the share at each look (the last one holds)."""
    flat = [bp for bp, k in schedule for _ in range(k)]
    return lambda look: flat[min(look, len(flat) - 1)]
