"""Vectorised simulators of monitored rollouts, shared by the tests and the benchmarks.

Each simulator returns cumulative statistics at every look for many independent runs
(arrays of shape (runs, looks)); the decision functions turn them into the first look at
which a method would FAIL or PASS. Pure numpy: a thousand rollouts of 400 looks take
milliseconds, which is what lets the acceptance tests assert error rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from coalmine.analysis.sequential._mixture import (
    DEFAULT_DESIGN_EFFECTIVE_N,
    default_rho,
    mixture_radius_array,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
NEVER = -1  # look index meaning "did not happen"


@dataclass(frozen=True)
class DifferencePaths:
    """Estimated Δ and its information at every look of every run (shape (runs, looks))."""

    estimate: FloatArray
    information: FloatArray
    effective_n: FloatArray  # 1/(1/n_c + 1/n_p), for the scale-free default ρ
    candidate_n: FloatArray  # candidate samples at each look (shape (looks,) or (runs, looks))


def _bernoulli_var(s: FloatArray, n: FloatArray) -> FloatArray:
    n_safe = np.maximum(n, 2.0)
    return np.asarray(s * (n - s) / (n_safe * (n_safe - 1.0)), dtype=np.float64)


def simulate_bernoulli_canary(
    rng: np.random.Generator,
    *,
    runs: int,
    p_baseline: float,
    p_candidate: float,
    share: float,
    look_every: int,
    max_candidate: int,
) -> DifferencePaths:
    """Canary at a constant share: `look_every` candidate samples (and the matching
    production samples) between looks, up to `max_candidate` candidate samples."""
    looks = max_candidate // look_every
    per_look_p = round(look_every * (1.0 - share) / share)
    sc = rng.binomial(look_every, p_candidate, size=(runs, looks)).cumsum(axis=1).astype(float)
    sp = rng.binomial(per_look_p, p_baseline, size=(runs, looks)).cumsum(axis=1).astype(float)
    nc = np.arange(1, looks + 1, dtype=float) * look_every
    np_ = np.arange(1, looks + 1, dtype=float) * per_look_p
    return _two_arm_paths(sc, nc, sp, np_)


def _two_arm_paths(
    sc: FloatArray, nc: FloatArray, sp: FloatArray, np_: FloatArray
) -> DifferencePaths:
    var = _bernoulli_var(sc, nc) / nc + _bernoulli_var(sp, np_) / np_
    info = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    eff = np.broadcast_to(1.0 / (1.0 / nc + 1.0 / np_), sc.shape)
    return DifferencePaths(sc / nc - sp / np_, info, np.asarray(eff, dtype=float), nc)


def simulate_paired_shadow(
    rng: np.random.Generator,
    *,
    runs: int,
    p_baseline: float,
    p_candidate: float,
    disagreement: float,
    look_every: int,
    max_requests: int,
) -> DifferencePaths:
    """Shadow: both models answer every request; d = correct_c − correct_p.

    P(c right, p wrong) = (disagreement + Δ)/2 and P(c wrong, p right) = (disagreement − Δ)/2
    with Δ = p_candidate − p_baseline.
    """
    delta = p_candidate - p_baseline
    up = (disagreement + delta) / 2.0
    down = (disagreement - delta) / 2.0
    if min(up, down) < 0:
        raise ValueError("disagreement: must be ≥ |p_candidate − p_baseline|")
    looks = max_requests // look_every
    counts = rng.multinomial(look_every, [up, down, 1.0 - up - down], size=(runs, looks))
    n_up = counts[..., 0].cumsum(axis=1).astype(float)
    n_down = counts[..., 1].cumsum(axis=1).astype(float)
    n = np.arange(1, looks + 1, dtype=float) * look_every
    total = n_up - n_down
    total_sq = n_up + n_down
    var = np.maximum(total_sq - total * total / n, 0.0) / (n - 1.0) / n
    info = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    return DifferencePaths(total / n, info, np.broadcast_to(n, total.shape).copy(), n)


def mixture_crossings(
    paths: DifferencePaths,
    *,
    alpha: float,
    margin: float,
    sides: Literal["two", "one"] = "two",
    rho: float | None = None,
    higher_is_better: bool = True,
) -> tuple[IntArray, IntArray]:
    """First look of FAIL and of PASS (NEVER if none) for the mixture CS decision rule.

    sides="two": one two-sided CS at α; sides="one": a lower and an upper one-sided CS,
    each at α (each error type is then ≤ α on its own).
    """
    if rho is None:
        per_sample = paths.information / np.maximum(paths.effective_n, 1.0)
        rho_a: FloatArray | float = np.where(
            per_sample > 0,
            per_sample * DEFAULT_DESIGN_EFFECTIVE_N / _rho_divisor(alpha),
            1.0,
        )
    else:
        rho_a = rho
    r = mixture_radius_array(paths.information, alpha, rho_a, one_sided=sides == "one")
    lower = paths.estimate - r
    upper = paths.estimate + r
    eps = abs(margin)
    if higher_is_better:
        fail, ok = upper < -eps, lower > -eps
    else:
        fail, ok = lower > eps, upper < eps
    return first_true(fail), first_true(ok)


def _rho_divisor(alpha: float) -> float:
    return 1.0 / default_rho(1.0, alpha)


def naive_z_crossings(paths: DifferencePaths, *, alpha: float, margin: float = 0.0) -> IntArray:
    """First look at which a one-sided z-test at level α, repeated at every look, FAILs."""
    z = stats.norm.ppf(1.0 - alpha)
    se = np.where(
        paths.information > 0, 1.0 / np.sqrt(np.maximum(paths.information, 1e-300)), np.inf
    )
    fail = paths.estimate + z * se < -abs(margin)
    return first_true(fail)


def fixed_horizon_fail(
    paths: DifferencePaths, *, alpha: float, look: int, margin: float = 0.0
) -> NDArray[np.bool_]:
    """FAIL of a single one-sided z-test at one pre-planned look (the textbook design)."""
    z = stats.norm.ppf(1.0 - alpha)
    info = paths.information[:, look]
    se = np.where(info > 0, 1.0 / np.sqrt(np.maximum(info, 1e-300)), np.inf)
    return np.asarray(paths.estimate[:, look] + z * se < -abs(margin))


def first_true(mask: NDArray[np.bool_]) -> IntArray:
    """Index of the first True along the last axis, NEVER where there is none."""
    any_ = mask.any(axis=-1)
    idx = mask.argmax(axis=-1)
    return np.where(any_, idx, NEVER).astype(np.int64)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for a Monte Carlo rate."""
    a = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(a / 2, successes, trials - successes + 1))
    hi = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - a / 2, successes + 1, trials - successes))
    )
    return lo, hi


def rate_by(times: IntArray, look: int) -> float:
    """Fraction of runs whose event happened at or before `look`."""
    return float(np.mean((times != NEVER) & (times <= look)))


def quantile_of_times(times: IntArray, q: float) -> float:
    """q-quantile of the event look over runs (inf when fewer than q of runs had it)."""
    t = np.where(times == NEVER, np.iinfo(np.int64).max, times)
    k = math.ceil(q * t.size) - 1
    v = np.sort(t)[max(k, 0)]
    return math.inf if v == np.iinfo(np.int64).max else float(v)
