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
    two_sample_variance,
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
    var = two_sample_variance(_bernoulli_var(sc, nc), nc, _bernoulli_var(sp, np_), np_)
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


def _paired_paths(total: FloatArray, total_sq: FloatArray, n: FloatArray) -> DifferencePaths:
    """One-sample paths (the paired CS) from cumulative Σd and Σd² at every look."""
    var = np.maximum(total_sq - total * total / n, 0.0) / (n - 1.0) / n
    info = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    return DifferencePaths(total / n, info, np.broadcast_to(n, total.shape).copy(), n)


def noise_floor_cells(
    flip_production: float, flip_baseline: float, flip_candidate: float
) -> FloatArray:
    """P(a_c, a_b) over the cells (1,1), (1,0), (0,1), (0,0) for binary answers that flip
    the true class independently: a_c = [candidate == production], a_b = [baseline ==
    production] on the same request."""
    out = np.zeros(4)
    for fp in (0, 1):
        for fc in (0, 1):
            for fb in (0, 1):
                pr = (flip_production if fp else 1 - flip_production) * (
                    (flip_candidate if fc else 1 - flip_candidate)
                    * (flip_baseline if fb else 1 - flip_baseline)
                )
                out[2 * int(fc != fp) + int(fb != fp)] += pr
    return out


def simulate_noise_floor_shadow(
    rng: np.random.Generator,
    *,
    runs: int,
    flip_production: float,
    flip_baseline: float,
    flip_candidate: float,
    look_every: int,
    max_requests: int,
) -> tuple[DifferencePaths, DifferencePaths]:
    """Shadow with a baseline: every request answered by production, candidate and a fresh
    baseline of production's version, each flipping the true (binary) class at random.

    Returns the paths of d = a_c − a_b (the noise-floor criterion, `agreement margin`) and of
    a_c itself (the absolute criterion, `agreement min`).
    """
    cells = noise_floor_cells(flip_production, flip_baseline, flip_candidate)
    looks = max_requests // look_every
    counts = rng.multinomial(look_every, cells, size=(runs, looks)).cumsum(axis=1).astype(float)
    n = np.arange(1, looks + 1, dtype=float) * look_every
    up, down = counts[..., 1], counts[..., 2]  # (1,0): d = +1, (0,1): d = −1
    own = counts[..., 0] + counts[..., 1]  # a_c = 1
    return _paired_paths(up - down, up + down, n), _paired_paths(own, own, n)


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


@dataclass(frozen=True)
class RampPaths:
    """A ramping canary judged two ways: stratified by step and naively pooled."""

    stratified: DifferencePaths
    pooled: DifferencePaths
    step_of_look: IntArray  # which step each look falls in


def simulate_bernoulli_ramp(
    rng: np.random.Generator,
    *,
    runs: int,
    shares: tuple[float, ...],
    requests_per_step: int,
    look_every_requests: int,
    p_start: float,
    p_end: float,
    delta: float = 0.0,
) -> RampPaths:
    """Shares step through `shares` while the base rate drifts linearly p_start → p_end over
    the whole rollout, in both versions (the candidate is `delta` better or worse)."""
    looks_per_step = requests_per_step // look_every_requests
    total_looks = looks_per_step * len(shares)
    t_mid = (np.arange(total_looks) + 0.5) / total_looks
    p_t = p_start + (p_end - p_start) * t_mid
    nc_b = np.array([round(look_every_requests * s) for s in shares for _ in range(looks_per_step)])
    np_b = look_every_requests - nc_b
    sc_b = rng.binomial(nc_b, np.clip(p_t + delta, 0, 1), size=(runs, total_looks)).astype(float)
    sp_b = rng.binomial(np_b, p_t, size=(runs, total_looks)).astype(float)
    step = np.repeat(np.arange(len(shares)), looks_per_step)

    pooled = _two_arm_paths(
        sc_b.cumsum(axis=1),
        nc_b.cumsum().astype(float),
        sp_b.cumsum(axis=1),
        np_b.cumsum().astype(float),
    )

    s_acc = np.zeros(runs)
    i_acc = np.zeros(runs)
    e_acc = 0.0
    est = np.zeros((runs, total_looks))
    info = np.zeros((runs, total_looks))
    eff = np.zeros((runs, total_looks))
    for k in range(len(shares)):
        sl = slice(k * looks_per_step, (k + 1) * looks_per_step)
        part = _two_arm_paths(
            sc_b[:, sl].cumsum(axis=1),
            nc_b[sl].cumsum().astype(float),
            sp_b[:, sl].cumsum(axis=1),
            np_b[sl].cumsum().astype(float),
        )
        s_now = s_acc[:, None] + part.information * part.estimate
        i_now = i_acc[:, None] + part.information
        info[:, sl] = i_now
        est[:, sl] = np.where(i_now > 0, s_now / np.where(i_now > 0, i_now, 1.0), 0.0)
        eff[:, sl] = e_acc + part.effective_n
        s_acc, i_acc, e_acc = s_now[:, -1], i_now[:, -1], e_acc + float(part.effective_n[0, -1])
    stratified = DifferencePaths(est, info, eff, nc_b.cumsum().astype(float))
    return RampPaths(stratified, pooled, step)


def count_evalue_paths(
    rng: np.random.Generator,
    *,
    runs: int,
    shares: tuple[float, ...],
    requests_per_window: int,
    windows_per_share: int,
    rate_baseline: float,
    rate_candidate: float,
    kappa: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Log e-values of `ErrorCountEValue` (vectorised over runs) at every window, and the
    cumulative candidate requests at each window."""
    from coalmine.analysis.sequential._counts import ErrorCountEValue

    template = ErrorCountEValue(kappa=kappa)
    grid, log_prior, k_idx = template.grid, template.log_prior, template.kappa_index
    alt = slice(k_idx + 1, None)
    lp_alt = log_prior[alt] - np.logaddexp.reduce(log_prior[alt])
    loglik = np.zeros((runs, grid.size))
    out = []
    cand_n = []
    total_c = 0
    for share in shares:
        nc = round(requests_per_window * share)
        npr = requests_per_window - nc
        th = share * grid / (share * grid + 1.0 - share)
        lth, l1th = np.log(th), np.log1p(-th)
        for _ in range(windows_per_share):
            xc = rng.binomial(nc, rate_candidate, size=runs).astype(float)
            xp = rng.binomial(npr, rate_baseline, size=runs).astype(float)
            loglik += xc[:, None] * lth + xp[:, None] * l1th
            ll = loglik[:, alt] - loglik[:, [k_idx]]
            out.append(np.logaddexp.reduce(lp_alt + ll, axis=1))
            total_c += nc
            cand_n.append(total_c)
    return np.stack(out, axis=1), np.asarray(cand_n, dtype=float)


def latency_verdict_paths(
    rng: np.random.Generator,
    *,
    runs: int,
    share: float,
    look_every: int,
    max_candidate: int,
    log_mean: float,
    log_sd: float,
    candidate_factor: float,
    p: float,
    max_ratio: float,
    alpha: float,
) -> tuple[list[list[str]], FloatArray]:
    """`quantile_ratio_verdict` at every look for lognormal latencies, the candidate's scaled
    by `candidate_factor`. Counts are drawn straight into the histogram bins (multinomial
    on the exact bin probabilities), which is the same in distribution as adding samples."""
    from coalmine.analysis.sequential._quantiles import LogHistogram, quantile_ratio_verdict

    template = LogHistogram()
    edges = template.edges

    def bin_probs(factor: float) -> FloatArray:
        with np.errstate(divide="ignore"):
            z = (np.log(edges / factor) - log_mean) / log_sd
        cdf = stats.norm.cdf(z)
        pr = np.diff(cdf)
        return np.asarray(pr / pr.sum(), dtype=np.float64)

    pc, pb = bin_probs(candidate_factor), bin_probs(1.0)
    looks = max_candidate // look_every
    per_look_b = round(look_every * (1.0 - share) / share)
    cand = np.zeros((runs, pc.size), dtype=np.int64)
    base = np.zeros((runs, pb.size), dtype=np.int64)
    verdicts: list[list[str]] = [[] for _ in range(runs)]
    hc, hb = LogHistogram(), LogHistogram()
    for _ in range(looks):
        cand += rng.multinomial(look_every, pc, size=runs)
        base += rng.multinomial(per_look_b, pb, size=runs)
        for r in range(runs):
            hc.counts, hb.counts = cand[r], base[r]
            verdicts[r].append(quantile_ratio_verdict(hc, hb, p, max_ratio, alpha).value)
    n_c = np.arange(1, looks + 1, dtype=float) * look_every
    return verdicts, n_c
