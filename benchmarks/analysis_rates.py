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

Run: `python benchmarks/analysis_rates.py`. `benchmarks/analysis.py` calls `main()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coalmine.analysis.sequential import fixed_horizon_sample_size
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


def main() -> None:
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


if __name__ == "__main__":
    main()
