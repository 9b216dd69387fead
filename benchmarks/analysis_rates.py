"""False-rollback and detection rates: Coalmine's anytime-valid tests vs peeking vs fixed horizon.

One run, fixed seed, simulated as in the analysis issue: 5% canary share, production accuracy
0.90, a look every 50 candidate labelled samples up to 20,000 (400 looks), α = 0.05, margin 0
(FAIL = "certainly worse"). Methods:

- Coalmine, two-sided: normal-mixture confidence sequence, FAIL when U < 0.
- Coalmine, one-sided: half-normal-mixture upper bound at α (tighter; PASS uses its own
  lower bound at α, so each error type is still ≤ α).
- Naive peeking: a one-sided z-test at α repeated at every look (what per-interval checks in
  Kayenta/Argo/Flagger amount to).
- Fixed horizon: the same z-test at one look only, after the 1,706 candidate samples
  (rounded up to the next look) that give 80% power for a 2-point drop; never looked at
  before then.

Then the judge itself (`judge()` on the statistics `Analysis` keeps, coalmine/analysis/
boundary.py), per criterion, before (plug-in variance; count e-value at 1/α a side) and after
(score form; 2/α a side): PASS and FAIL rates with the candidate exactly at the threshold
(both are errors there), and the median candidate samples to PASS an as-good candidate and to
FAIL a clearly worse one; then paired vs unpaired canary samples for a 2-point accuracy drop.
These take ~30 minutes on the shared 2-core machine (`--runs` lowers the 200 runs a cell).

Run: `python benchmarks/analysis_rates.py [--runs N]`. `benchmarks/analysis.py` calls `main()`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from coalmine.analysis.boundary import (
    Outcome,
    Scenario,
    pareto,
    run_binary,
    run_latency,
    run_paired,
    shares,
)
from coalmine.analysis.criteria import Criterion
from coalmine.analysis.judge import Evidence
from coalmine.analysis.sequential import Verdict, fixed_horizon_sample_size
from coalmine.analysis.sequential.simulation import (
    NEVER,
    DifferencePaths,
    clopper_pearson,
    fixed_horizon_fail,
    mixture_crossings,
    naive_z_crossings,
    quantile_of_times,
    simulate_bernoulli_canary,
)

ALPHA = 0.05
SHARE = 0.05
LOOK = 50
MAX_CANDIDATE = 20_000
P_BASE = 0.90


@dataclass(frozen=True)
class Row:
    method: str
    false_fail: float  # A/A false rollback rate
    false_fail_upper: float  # Clopper–Pearson 95% upper bound
    detect_2pt: float  # FAIL rate for accuracy 0.88 within 20,000 candidate samples
    median_2pt: float  # median candidate samples to FAIL (inf if under half detect)
    p90_2pt: float  # candidate samples by which 90% of runs FAILed
    detect_5pt: float
    median_5pt: float


def _samples(look_index: float) -> float:
    return math.inf if math.isinf(look_index) else (look_index + 1) * LOOK


def _fail_times(method: str, paths: DifferencePaths, fixed_look: int) -> np.ndarray:
    if method == "Coalmine mixture CS, two-sided":
        return mixture_crossings(paths, alpha=ALPHA, margin=0.0, sides="two")[0]
    if method == "Coalmine mixture CS, one-sided":
        return mixture_crossings(paths, alpha=ALPHA, margin=0.0, sides="one")[0]
    if method == "naive z-test at every look":
        return naive_z_crossings(paths, alpha=ALPHA)
    fails = fixed_horizon_fail(paths, alpha=ALPHA, look=fixed_look)
    return np.where(fails, fixed_look, NEVER)


METHODS = (
    "Coalmine mixture CS, two-sided",
    "Coalmine mixture CS, one-sided",
    "naive z-test at every look",
    "fixed-horizon z-test (1 look)",
)


def rates_table(seed: int = 2024, aa_runs: int = 2_000, runs: int = 1_000) -> list[Row]:
    rng = np.random.default_rng(seed)

    def sim(p_candidate: float, n_runs: int) -> DifferencePaths:
        return simulate_bernoulli_canary(
            rng,
            runs=n_runs,
            p_baseline=P_BASE,
            p_candidate=p_candidate,
            share=SHARE,
            look_every=LOOK,
            max_candidate=MAX_CANDIDATE,
        )

    aa, two_pt, five_pt = sim(P_BASE, aa_runs), sim(P_BASE - 0.02, runs), sim(P_BASE - 0.05, runs)
    n_fixed = fixed_horizon_sample_size(0.02, 0.88 * 0.12, 0.9 * 0.1, SHARE, alpha=ALPHA, power=0.8)
    fixed_look = math.ceil(n_fixed / LOOK) - 1
    rows = []
    for method in METHODS:
        f_aa = _fail_times(method, aa, fixed_look) != NEVER
        t2 = _fail_times(method, two_pt, fixed_look)
        t5 = _fail_times(method, five_pt, fixed_look)
        rows.append(
            Row(
                method=method,
                false_fail=float(f_aa.mean()),
                false_fail_upper=clopper_pearson(int(f_aa.sum()), f_aa.size)[1],
                detect_2pt=float(np.mean(t2 != NEVER)),
                median_2pt=_samples(quantile_of_times(t2, 0.5)),
                p90_2pt=_samples(quantile_of_times(t2, 0.9)),
                detect_5pt=float(np.mean(t5 != NEVER)),
                median_5pt=_samples(quantile_of_times(t5, 0.5)),
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    def n(x: float) -> str:
        return "never" if math.isinf(x) else f"{x:,.0f}"

    head = (
        "| method | A/A false rollback (95% upper) | 2-pt drop detected | median n | 90% by n "
        "| 5-pt drop detected | median n |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.false_fail:.2%} ({r.false_fail_upper:.2%}) | {r.detect_2pt:.1%} "
            f"| {n(r.median_2pt)} | {n(r.p90_2pt)} | {r.detect_5pt:.1%} | {n(r.median_5pt)} |"
        )
    return "\n".join(lines)


def noise_floor_table(seed: int = 2025, runs: int = 2_000) -> str:
    """Shadow agreement, every instance flipping 8% of answers at random (a nondeterministic
    model): `min: 0.95` vs `margin: 0.01` against a fresh baseline's agreement (noise floor)."""
    from coalmine.analysis.sequential.simulation import simulate_noise_floor_shadow

    rng = np.random.default_rng(seed)
    out = ["| shadow candidate | min 0.95 FAILs | margin 0.01 FAILs | margin median n to FAIL |",
           "|---|---|---|---|"]  # fmt: skip
    for label, excess in (("A/A (same model)", 0.0), ("+5 pts disagreement", 0.05)):
        floor, own = simulate_noise_floor_shadow(
            rng, runs=runs, flip_production=0.08, flip_baseline=0.08,
            flip_candidate=0.08 + excess / (1 - 2 * 0.08), look_every=LOOK, max_requests=20_000,
        )  # fmt: skip
        shifted = DifferencePaths(own.estimate - 0.95, own.information, own.effective_n,
                                  own.candidate_n)  # fmt: skip
        f_min = mixture_crossings(shifted, alpha=ALPHA, margin=0.0)[0] != NEVER
        t = mixture_crossings(floor, alpha=ALPHA, margin=0.01)[0]
        med = _samples(quantile_of_times(t, 0.5))
        out.append(f"| {label} | {f_min.mean():.1%} | {np.mean(t != NEVER):.1%} | "
                   f"{'never' if math.isinf(med) else f'{med:,.0f}'} |")  # fmt: skip
    return "\n".join(out)


# -- the judge itself at the boundary: plug-in variance (before) vs score form (after) --------

PASS, FAIL = Verdict.PASS, Verdict.FAIL


@contextmanager
def plug_in_construction() -> Iterator[None]:
    """The judge as it was before the score form: plug-in variance, count test at 1/α a side."""
    j = sys.modules[Evidence.__module__]  # the module (the package re-exports the function)

    def old_count_test(c: Criterion, ev: Evidence, alpha: float) -> Any:
        e = ev.evalue
        assert e is not None and c.max_ratio is not None
        v = Verdict.INCONCLUSIVE
        if e.e_value >= 1 / alpha:
            v = FAIL
        elif e.pass_e_value(c.max_ratio) >= 1 / alpha:
            v = PASS
        return j._Test(v, math.nan, math.nan, math.nan, c.max_ratio, "ratio")

    saved = j._score_test, j._error_count_test
    j._score_test = lambda *a: None  # type: ignore[assignment]
    j._error_count_test = old_count_test  # type: ignore[assignment]
    try:
        yield
    finally:
        j._score_test, j._error_count_test = saved


def _pareto(r: np.random.Generator, s: float, n: int) -> np.ndarray:
    return pareto(r, 1.5, 10.0 * s, n)


_RAMP = shares([(100, 40), (500, 40), (2_500, 40), (5_000, 80)])
# name, criterion, (rates or latency scale) at the boundary / as good / clearly worse
CASES: list[tuple[str, dict[str, Any], tuple[Any, Any, Any], dict[str, Any]]] = [
    ("accuracy 0.90, margin 1 pt", {"metric": "accuracy", "margin": 0.01},
     ((0.89, 0.90), (0.90, 0.90), (0.87, 0.90)), {"per_look": 50, "looks": 200}),
    ("accuracy 0.99, margin 1 pt", {"metric": "accuracy", "margin": 0.01},
     ((0.98, 0.99), (0.99, 0.99), (0.96, 0.99)), {"per_look": 50, "looks": 200}),
    ("accuracy 0.60, margin 1 pt", {"metric": "accuracy", "margin": 0.01},
     ((0.59, 0.60), (0.60, 0.60), (0.57, 0.60)), {"per_look": 50, "looks": 200}),
    ("accuracy 0.99 A/A, margin 0", {"metric": "accuracy", "margin": 0},
     ((0.99, 0.99), None, (0.97, 0.99)), {"per_look": 50, "looks": 200}),
    ("accuracy A/A, 1→50% ramp, base 0.90→0.80", {"metric": "accuracy", "margin": 0},
     ("ramp", None, None), {"per_look": 50, "looks": 200, "share_bp": _RAMP}),
    ("error rate 1%, margin 0.5 pt (default)", {"metric": "error_rate"},
     ((0.015, 0.01), (0.01, 0.01), (0.025, 0.01)), {"per_look": 250, "looks": 120}),
    ("error rate 0.1% A/A, margin 0", {"metric": "error_rate", "margin": 0},
     ((0.001, 0.001), None, (0.004, 0.001)), {"per_look": 250, "looks": 120}),
    ("error rate 0.5% A/A, margin 0", {"metric": "error_rate", "margin": 0},
     ((0.005, 0.005), None, (0.01, 0.005)), {"per_look": 250, "looks": 120}),
    ("error rate 0.1%, max_ratio 1.5 (count e-value)", {"metric": "error_rate", "max_ratio": 1.5},
     ((0.0015, 0.001), (0.001, 0.001), (0.004, 0.001)), {"per_look": 250, "looks": 120}),
    ("latency_mean Pareto(1.5), max_ratio 1.2", {"metric": "latency_mean", "max_ratio": 1.2},
     (1.2, 1.0, 1.5), {"per_look": 50, "looks": 200}),
    ("latency_p95 Pareto(1.5), max_ratio 1.2", {"metric": "latency_p95", "max_ratio": 1.2},
     (1.2, 1.0, 1.5), {"per_look": 50, "looks": 200}),
]  # fmt: skip


def _outcome(crit: dict[str, Any], rates: Any, kw: dict[str, Any], runs: int, seed: int) -> Outcome:
    if isinstance(rates, float):
        return run_latency(Scenario(crit, **kw), runs, seed, _pareto, rates)
    if rates == "ramp":
        looks = kw["looks"]
        drift = lambda k: (0.90 - 0.10 * k / looks,) * 2  # noqa: E731
        return run_binary(Scenario(crit, rates=drift, **kw), runs, seed)
    return run_binary(Scenario(crit, rates=lambda k: rates, **kw), runs, seed)


def boundary_table(runs: int = 200, seed: int = 99) -> str:
    """Per case and construction: PASS and FAIL rates at the boundary (both are errors there),
    and the median candidate samples to PASS an as-good candidate / to FAIL a worse one."""

    def n(x: float) -> str:
        return "never" if math.isinf(x) else f"{x:,.0f}"

    out = [
        "| case (5% canary unless stated) | construction | false PASS at boundary | "
        "false FAIL at boundary | median n to PASS (as good) | median n to FAIL (worse) |",
        "|---|---|---|---|---|---|",
    ]
    for name, crit, (edge, good, bad), kw in CASES:
        for label in ("plug-in (before)", "score form (after)"):
            ctx = plug_in_construction() if label.startswith("plug") else nullcontext()
            with ctx:
                at = _outcome(crit, edge, kw, runs, seed)
                g = _outcome(crit, good, kw, runs, seed + 1) if good is not None else None
                b = _outcome(crit, bad, kw, runs, seed + 2) if bad is not None else None
            cells = []
            for v in (PASS, FAIL):
                k, total = at.rate(v)
                cells.append(f"{k / total:.1%} (≤ {clopper_pearson(k, total)[1]:.1%})")
            if label.startswith("score") and "p95" in name:
                label = "quantile CS (unchanged)"
            elif label.startswith("score") and "count" in name:
                label = "e-value at 2/α a side (after)"
            elif label.startswith("plug") and "count" in name:
                label = "e-value at 1/α a side (before)"
            out.append(
                f"| {name} | {label} | {cells[0]} | {cells[1]} | "
                f"{n(g.median_samples(PASS)) if g else '—'} | "
                f"{n(b.median_samples(FAIL)) if b else '—'} |"
            )
    return "\n".join(out)


def paired_table(runs: int = 200, seed: int = 7) -> str:
    """Labelled candidate samples to FAIL accuracy 0.90 → 0.88 (margin 0): a 5% canary judged
    unpaired against production's other requests, vs a paired canary (canary.paired: stable
    also answers the canary's requests; the judge takes the pairs) at 4%, 6% and 10% of
    requests on which exactly one version is right. The A/A runs are the boundary (margin 0:
    there a PASS and a FAIL are both errors); "planned n" is the planner's 90%-power wait."""
    from coalmine.analysis.plan import step_can_decide

    crit = {"metric": "accuracy", "margin": 0}
    rows = ["| canary at 5%, accuracy 0.90 → 0.88 | detected | median n | false FAIL A/A "
            "| false PASS A/A | planned n (90% power) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    kw: dict[str, Any] = {"per_look": 50, "looks": 400}

    def bound(o: Outcome, v: Verdict) -> str:
        k, total = o.rate(v)
        return f"{k / total:.1%} (≤ {clopper_pearson(k, total)[1]:.1%})"

    def planned(**paired: Any) -> str:
        plan = step_can_decide(share_percent=5, rps=1, label_rate=1, min_effect=0.02, **paired)
        return f"{plan.anytime_samples:,}"

    fmt = lambda o, a, p: (f"{o.rate(FAIL)[0] / runs:.0%} | {o.median_samples(FAIL):,.0f} | "  # noqa: E731
                           f"{bound(a, FAIL)} | {bound(a, PASS)} | {p} |")  # fmt: skip
    unpaired = run_binary(Scenario(crit, rates=lambda k: (0.88, 0.90), **kw), runs, seed)
    aa = run_binary(Scenario(crit, rates=lambda k: (0.90, 0.90), **kw), runs, seed + 1)
    rows.append(f"| unpaired (score form) | {fmt(unpaired, aa, planned())}")
    for d in (0.04, 0.06, 0.10):
        p = run_paired(Scenario(crit, rates=lambda k: (0.88, 0.90), **kw), runs, seed + 2, d)
        a = run_paired(Scenario(crit, rates=lambda k: (0.90, 0.90), **kw), runs, seed + 3, d)
        plan = planned(paired=True, disagreement=d)
        rows.append(f"| paired canary, {d:.0%} of requests: one version right | {fmt(p, a, plan)}")
    return "\n".join(rows)


def main(runs: int = 200) -> None:
    print(
        f"Canary at {SHARE:.0%} share, accuracy {P_BASE:.2f}, α = {ALPHA}, a look every {LOOK} "
        f"candidate samples up to {MAX_CANDIDATE:,}; n = candidate labelled samples to FAIL."
    )
    print(format_table(rates_table()))
    print(
        f"\nShadow agreement with a noise floor: production, baseline and candidate each flip "
        f"8% of answers; α = {ALPHA}, a look every {LOOK} mirrored requests up to 20,000."
    )
    print(noise_floor_table())
    print(
        "\nThe judge at the boundary (the candidate exactly as bad as allowed: a PASS there "
        "promotes a regression, a FAIL rolls back for nothing; each must be ≤ α = 5%), "
        f"{runs} runs a cell, a judgement every 50 candidate samples (250 for error rates), "
        "the first PASS/FAIL ends a run; (≤ x) is the 95% Clopper–Pearson upper bound."
    )
    print(boundary_table(runs))
    print(
        "\nPaired vs unpaired canary (a judgement every 50 labelled candidate samples, up to "
        f"20,000; {runs} runs a cell; (≤ x) is the 95% Clopper–Pearson upper bound):"
    )
    print(paired_table(runs))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per boundary/paired cell")
    main(parser.parse_args().runs)
