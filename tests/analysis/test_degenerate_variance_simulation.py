"""Streams with no spread of their own, judged through the real `judge()` (issue 15).

An identical shadow gives paired differences that are 0 on every request (log loss, a user
metric, batch AUCs) and a mean |difference| of 0: the plug-in normal mixture then had no
variance and gave (−∞, ∞) for ever, so such a candidate could never PASS a `max` or a
margin. The score form (variance around the threshold, `mean_z`) with a prior variance
(the arms' own, unpaired variance, or the limit² for |difference|) fixes that; at the
boundary both errors stay ≤ α (upper Clopper–Pearson bound), over the controller's looks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from coalmine.analysis.boundary import Outcome, Scenario, run_paired_values, run_single
from coalmine.analysis.criteria import Criterion
from coalmine.analysis.judge import Evidence, judge
from coalmine.analysis.metrics import ArmSlice, SliceStats
from coalmine.analysis.sequential import Moments, Verdict
from coalmine.analysis.sequential.simulation import clopper_pearson

ALPHA = 0.05
LIMIT = 20.0  # mean |difference| max
MARGIN = 0.1  # log loss margin


def _both_sides_within_alpha(out: Outcome) -> None:
    for verdict in (Verdict.PASS, Verdict.FAIL):
        k, n = out.rate(verdict)
        upper = clopper_pearson(k, n)[1]
        assert upper <= ALPHA, f"{verdict.value} in {k}/{n} runs at the boundary (CP {upper:.3f})"


def test_an_identical_candidate_passes_a_mean_abs_diff_max() -> None:
    # 0 on every request: the plug-in CS stayed (−inf, inf) over 3,000 pairs
    sc = Scenario({"metric": "mean_abs_diff", "max": LIMIT}, looks=300, per_look=10)
    out = run_single(sc, 1, seed=1, sample=lambda rng, n: np.zeros(n))
    assert out.verdicts == [Verdict.PASS]
    assert out.samples[0] <= 100


ABS_DIFFS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "exponential": lambda rng, n: rng.exponential(LIMIT, n),
    "half-normal": lambda rng, n: np.abs(rng.normal(0.0, LIMIT * np.sqrt(np.pi / 2), n)),
    "gamma(0.5)": lambda rng, n: rng.gamma(0.5, LIMIT / 0.5, n),
}


@pytest.mark.parametrize("name", sorted(ABS_DIFFS))
def test_mean_abs_diff_at_its_max_neither_passes_nor_fails_beyond_alpha(name: str) -> None:
    sc = Scenario({"metric": "mean_abs_diff", "max": LIMIT}, looks=120, per_look=25)
    _both_sides_within_alpha(run_single(sc, 200, seed=7, sample=ABS_DIFFS[name]))


def _log_losses(shift: float, noise: float):
    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        b = rng.exponential(0.2, n)
        return b + shift + (rng.normal(0.0, noise, n) if noise else 0.0), b

    return sample


def test_an_identical_shadow_passes_a_log_loss_margin_and_a_worse_one_fails() -> None:
    sc = Scenario({"metric": "log_loss", "margin": MARGIN}, looks=100, per_look=20)
    same = run_paired_values(sc, 20, seed=3, sample=_log_losses(0.0, 0.0))
    assert same.rate(Verdict.PASS) == (20, 20)
    assert same.median_samples(Verdict.PASS) <= 200  # was: never (INCONCLUSIVE at 2,000)
    worse = run_paired_values(sc, 20, seed=4, sample=_log_losses(0.3, 0.1))
    assert worse.rate(Verdict.FAIL) == (20, 20)


def test_an_identical_per_example_0_1_value_passes_a_margin() -> None:
    # a 0/1 value outside accuracy's own floor (a user metric such as `correct`, an outcome)
    def correct(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        b = (rng.random(n) < 0.9).astype(float)
        return b.copy(), b

    sc = Scenario({"metric": "outcome:clicked", "margin": 0.05}, looks=100, per_look=20)
    out = run_paired_values(sc, 10, seed=5, sample=correct)
    assert out.rate(Verdict.PASS) == (10, 10)


@pytest.mark.parametrize("noise", [0.01, 0.3])
def test_a_log_loss_margin_at_the_boundary_neither_passes_nor_fails_beyond_alpha(
    noise: float,
) -> None:
    sc = Scenario({"metric": "log_loss", "margin": MARGIN}, looks=100, per_look=20)
    _both_sides_within_alpha(run_paired_values(sc, 200, seed=8, sample=_log_losses(MARGIN, noise)))


def test_identical_batch_aucs_pass_a_margin() -> None:
    crit = Criterion.model_validate({"metric": "auc", "margin": 0.05})
    stats = SliceStats(ArmSlice(), ArmSlice())
    stats.pairs.diffs["auc"] = Moments(12, 0.0, 0.0)  # 12 batches of 200, AUCs equal
    stats.pairs.pairs = 2_400
    assert judge(crit, Evidence(stats, "shadow"), ALPHA).verdict is Verdict.PASS
