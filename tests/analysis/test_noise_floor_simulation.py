"""Agreement against the noise floor (shadow with a baseline): simulations with fixed seeds.

Setting: binary answers; production, a fresh baseline of production's version and the
candidate each flip the true class of 8% of requests at random (a nondeterministic model:
any two instances disagree on 2·0.08·0.92 ≈ 14.7% of requests). A look every 50 mirrored
requests up to 20,000 (400 looks). Rates are asserted through Clopper–Pearson 95% Monte
Carlo bounds, like test_sequential_simulation.py.
"""

from __future__ import annotations

import numpy as np

from coalmine.analysis import Analysis, Criterion, Verdict
from coalmine.analysis.sequential.simulation import (
    NEVER,
    DifferencePaths,
    clopper_pearson,
    mixture_crossings,
    noise_floor_cells,
    quantile_of_times,
    simulate_noise_floor_shadow,
)

ALPHA = 0.05
LOOK = 50
FLIP = 0.08
MARGIN = 0.01


def _upper(events: np.ndarray) -> float:
    return clopper_pearson(int(np.sum(events)), events.size)[1]


def _lower(events: np.ndarray) -> float:
    return clopper_pearson(int(np.sum(events)), events.size)[0]


def _flip_for_excess(excess: float) -> float:
    """The candidate's flip rate that disagrees with production `excess` more than the
    baseline does: P(c ≠ p) − P(b ≠ p) = (f_c − f)(1 − 2f)."""
    return FLIP + excess / (1 - 2 * FLIP)


def _shadow(seed: int, flip_candidate: float, runs: int, max_requests: int = 20_000):
    return simulate_noise_floor_shadow(
        np.random.default_rng(seed), runs=runs, flip_production=FLIP, flip_baseline=FLIP,
        flip_candidate=flip_candidate, look_every=LOOK, max_requests=max_requests,
    )  # fmt: skip


def test_cells_give_the_stated_disagreements() -> None:
    cells = noise_floor_cells(FLIP, FLIP, _flip_for_excess(0.05))
    assert np.isclose(cells.sum(), 1.0)
    p_c_agrees, p_b_agrees = cells[0] + cells[1], cells[0] + cells[2]
    assert np.isclose(p_b_agrees, 1 - 2 * FLIP * (1 - FLIP))  # the noise floor: 85.3%
    assert np.isclose(p_b_agrees - p_c_agrees, 0.05)


def test_aa_nondeterministic_model_margin_rarely_fails_while_min_095_always_does() -> None:
    floor, own = _shadow(seed=31, flip_candidate=FLIP, runs=2_000)
    fail_margin, pass_margin = mixture_crossings(floor, alpha=ALPHA, margin=MARGIN)
    fail_tight, _ = mixture_crossings(floor, alpha=ALPHA, margin=0.0)  # ε = 0: the hard case
    # `agreement min 0.95`: the candidate's own agreement with production against 0.95
    shifted = DifferencePaths(own.estimate - 0.95, own.information, own.effective_n,
                              own.candidate_n)  # fmt: skip
    fail_min, _ = mixture_crossings(shifted, alpha=ALPHA, margin=0.0)
    m, t, a = fail_margin != NEVER, fail_tight != NEVER, fail_min != NEVER
    print(
        f"\nA/A, every instance flips 8%, 400 looks: false FAIL margin 0.01 {m.mean():.2%}, "
        f"margin 0 {t.mean():.2%}; min 0.95 FAILs {a.mean():.1%} (90% by "
        f"{(quantile_of_times(fail_min, 0.9) + 1) * LOOK:,.0f} requests); margin PASS by "
        f"20,000: {np.mean(pass_margin != NEVER):.1%}"
    )
    assert _upper(m) <= ALPHA
    assert _upper(t) <= ALPHA
    assert _lower(a) >= 0.99


def test_candidate_exactly_at_the_margin_false_fail_at_most_alpha() -> None:
    floor, _ = _shadow(seed=32, flip_candidate=_flip_for_excess(MARGIN), runs=2_000)
    fail, passed = mixture_crossings(floor, alpha=ALPHA, margin=MARGIN)
    print(
        f"\nexcess disagreement = margin: false FAIL {np.mean(fail != NEVER):.2%}, "
        f"false PASS {np.mean(passed != NEVER):.2%}"
    )
    assert _upper(fail != NEVER) <= ALPHA
    assert _upper(passed != NEVER) <= ALPHA


def test_candidate_5_points_above_the_noise_floor_fails_within_4000_requests() -> None:
    # at the share of α a rollout's agreement test really gets: α/2 (overall vs slices) over
    # 4 statistical default criteria
    alpha = ALPHA / 2 / 4
    floor, _ = _shadow(seed=33, flip_candidate=_flip_for_excess(0.05), runs=1_000,
                       max_requests=4_000)  # fmt: skip
    fail, passed = mixture_crossings(floor, alpha=alpha, margin=MARGIN)
    failed = fail != NEVER
    print(
        f"\n+5 pts disagreement over the floor, α={alpha:.5f}: FAIL by 4,000 requests "
        f"{failed.mean():.1%}, median {(quantile_of_times(fail, 0.5) + 1) * LOOK:,.0f}"
    )
    assert _lower(failed) >= 0.95
    assert not (passed != NEVER).any()


def test_the_analysis_api_judges_the_same_way_end_to_end() -> None:
    """A few whole runs through Analysis.add_pairs(noise_baseline=...) and the judge: the
    noise-floor default criterion never FAILs an A/A candidate, `min: 0.95` always does,
    and a +5 pts candidate FAILs."""
    rng = np.random.default_rng(34)
    criteria = [
        Criterion(metric="agreement", margin=MARGIN),
        Criterion(metric="agreement", name="agreement_min", min=0.95),
    ]
    for flip_c, expect in ((FLIP, "aa"), (_flip_for_excess(0.05), "worse")):
        for _ in range(4):
            a = Analysis(criteria, mode="shadow", noise_floor=True, max_slices=0)
            seen: dict[str, set[Verdict]] = {"agreement": set(), "agreement_min": set()}
            for _ in range(10):
                y = rng.integers(0, 3, 500)
                flip = lambda f, y=y: np.where(rng.random(y.size) < f, (y + 1) % 3, y)  # noqa: E731
                a.add_pairs(candidate=flip(flip_c).tolist(), baseline=flip(FLIP).tolist(),
                            noise_baseline=flip(FLIP).tolist())  # fmt: skip
                for r in a.judge().results:
                    seen[r.name].add(r.verdict)
            if expect == "aa":
                assert Verdict.FAIL not in seen["agreement"]
            else:
                assert Verdict.FAIL in seen["agreement"]
            assert Verdict.FAIL in seen["agreement_min"]
