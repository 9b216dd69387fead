"""Normal-mixture confidence sequences for a difference of means (asymptotic, anytime-valid).

Construction (Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Stat.; asymptotic form in
Waudby-Smith et al. 2021, arXiv:2103.06476; Johari et al.'s mSPRT is the same mixture):
with D the estimated difference and I = 1/Var(D) its information, S = D·I is (asymptotically)
a Gaussian random walk with variance process I. Mixing the exponential supermartingale
exp(λS − λ²I/2) over λ ~ N(0, 1/ρ) and applying Ville's inequality gives the two-sided
boundary |S| ≤ √((I+ρ) log((I+ρ)/(ρα²))), i.e. a radius on the Δ scale of
√((I+ρ) log((I+ρ)/(ρα²))) / I, valid simultaneously at every look. Mixing over λ ≥ 0 with a
half-normal density gives the one-sided boundary, which is tighter (≈ α instead of α/2 per
side) and solves 2√(ρ/(I+ρ)) exp(x²/2) Φ(x) = 1/α for x = S/√(I+ρ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr

from coalmine.analysis.sequential._decision import Interval
from coalmine.analysis.sequential._moments import Moments

Sides = Literal["two", "lower", "upper"]

# When the caller gives no ρ, the mixture is tuned for decisions around this many
# *effective* samples (1/(1/n_c + 1/n_p); a 5% canary with ~4,200 candidate samples).
# Results are insensitive to it within an order of magnitude; see `default_rho`.
DEFAULT_DESIGN_EFFECTIVE_N = 4_000.0

# Each arm's variance is shrunk toward the pooled variance with this many pseudo-samples.
# Without it, a small candidate sample with no variance (50 correct answers out of 50)
# makes Var(D̂) look tiny and the plug-in CS can PASS or FAIL on noise; with it, early
# looks stay wide. A fixed pseudo-count vanishes asymptotically, so validity is unchanged.
VARIANCE_PSEUDO_COUNT = 10.0


# Weight of a prior variance (`prior_variance_floor`) in samples. The judge's priors are data
# based (the two arms' own variances for paired differences), so the pairs' own spread must
# be seen over about this many pairs before it alone is believed. At the boundary of a log
# loss margin with paired differences 0 on 90% of requests and exponential on 10% (CV 4.4),
# false PASS was 17.5% with the plug-in, 8.5% with 10 pseudo-samples and 3.3% with 100;
# an identical shadow PASSes after ~140 pairs instead of ~80.
PRIOR_PSEUDO_COUNT = 100.0


def prior_variance_floor(
    sample_variance: float, n: int, prior_variance: float, count: float = PRIOR_PSEUDO_COUNT
) -> float:
    """The sample variance, shrunk toward `prior_variance` with `count` pseudo-samples where
    the prior is the larger (never narrower than the sample alone).

    A one-sample or paired stream can have no variance at all: an identical shadow gives
    d_i = 0 on every request, and the plug-in CS is then (−∞, ∞) for ever (no PASS possible),
    while a stream that merely has not met its spread yet gives a CS that is too narrow. A
    prior variance σ₀² weighted as `count` samples, ((n−1)s² + kσ₀²)/(n−1+k), is what a
    normal–inverse-χ² prior gives: it vanishes as n grows (the CS stays asymptotically
    valid), keeps early looks wide, and with s² = 0 shrinks as k·σ₀²/n, so a stream that
    never varies narrows as 1/n instead of never. Taking it only where σ₀² > s² is decided
    in advance and only ever widens the interval.
    """
    if not prior_variance > sample_variance or n < 1:
        return sample_variance
    return ((n - 1) * sample_variance + count * prior_variance) / (n - 1 + count)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")


def default_rho(design_information: float, alpha: float) -> float:
    """Mixture precision ρ that makes the CS tightest near `design_information`.

    ρ = I*/(2 log(1/α) + log(1 + 2 log(1/α))) (Howard et al. 2021, §3.5 approximation).
    """
    _check_alpha(alpha)
    if not design_information > 0:
        raise ValueError(f"design_information: must be > 0 (got {design_information!r})")
    la = 2.0 * math.log(1.0 / alpha)
    return float(design_information) / (la + math.log(1.0 + la))


def _one_sided_x(c: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve x²/2 + log Φ(x) = c (c > 0) by Newton from the right (g is convex, increasing)."""
    x = np.sqrt(2.0 * (c + math.log(2.0)))  # g(x) ≥ x²/2 − log 2, so this starts right of the root
    for _ in range(30):
        lphi = log_ndtr(x)
        g = 0.5 * x * x + lphi - c
        # g'(x) = x + φ(x)/Φ(x) (> 0 everywhere)
        mills = np.exp(-0.5 * x * x - 0.5 * math.log(2.0 * math.pi) - lphi)
        step = g / (x + mills)
        x = x - step
        if np.all(np.abs(step) < 1e-12):
            break
    return np.asarray(x, dtype=np.float64)


def mixture_radius_array(
    information: ArrayLike, alpha: float, rho: float | ArrayLike, *, one_sided: bool = False
) -> NDArray[np.float64]:
    """Vectorised `mixture_radius` (used by the simulations); inf where information == 0."""
    _check_alpha(alpha)
    info = np.asarray(information, dtype=np.float64)
    rho_a = np.asarray(rho, dtype=np.float64)
    if np.any(rho_a <= 0):
        raise ValueError("rho: must be > 0")
    safe = np.where(info > 0, info, 1.0)
    tot = safe + rho_a
    if one_sided:
        c = math.log(1.0 / (2.0 * alpha)) + 0.5 * np.log(tot / rho_a)
        if alpha >= 0.5:
            c = np.maximum(c, 1e-12)
        boundary = _one_sided_x(np.asarray(c, dtype=np.float64)) * np.sqrt(tot)
    else:
        boundary = np.sqrt(tot * np.log(tot / (rho_a * alpha * alpha)))
    out = np.where(info > 0, boundary / safe, np.inf)
    return np.asarray(out, dtype=np.float64)


def mixture_radius(
    information: float, alpha: float, rho: float, *, one_sided: bool = False
) -> float:
    """Normal-mixture CS radius on the Δ scale at information I = 1/Var(D̂).

    Two-sided: √((I+ρ)·log((I+ρ)/(ρα²)))/I, covering Δ at every look with probability ≥ 1−α.
    One-sided (`one_sided=True`): the half-normal mixture radius for a one-sided bound at
    level α. Infinite when `information` == 0.
    """
    if information < 0 or math.isnan(information):
        raise ValueError(f"information: must be ≥ 0 (got {information!r})")
    if information == 0:
        _check_alpha(alpha)
        return math.inf
    return float(mixture_radius_array(information, alpha, rho, one_sided=one_sided))


def two_sample_variance(
    var_c: ArrayLike, n_c: ArrayLike, var_p: ArrayLike, n_p: ArrayLike
) -> NDArray[np.float64]:
    """Var(D̂) = σ̃_c²/n_c + σ̃_p²/n_p with each arm's variance shrunk toward the pooled one
    (`VARIANCE_PSEUDO_COUNT`); vectorised, callers guarantee n ≥ 2 on both sides."""
    vc, nc = np.asarray(var_c, dtype=np.float64), np.asarray(n_c, dtype=np.float64)
    vp, npp = np.asarray(var_p, dtype=np.float64), np.asarray(n_p, dtype=np.float64)
    k = VARIANCE_PSEUDO_COUNT
    pooled = ((nc - 1.0) * vc + (npp - 1.0) * vp) / (nc + npp - 2.0)
    sc = ((nc - 1.0) * vc + k * pooled) / (nc - 1.0 + k)
    sp = ((npp - 1.0) * vp + k * pooled) / (npp - 1.0 + k)
    return np.asarray(sc / nc + sp / npp, dtype=np.float64)


def _interval(
    estimate: float, information: float, alpha: float, rho: float, sides: Sides
) -> Interval:
    if sides not in ("two", "lower", "upper"):
        raise ValueError(f"sides: must be 'two', 'lower' or 'upper' (got {sides!r})")
    if not information > 0 or not math.isfinite(information):
        return Interval(-math.inf, math.inf, estimate)
    r = mixture_radius(information, alpha, rho, one_sided=sides != "two")
    lower = estimate - r if sides in ("two", "lower") else -math.inf
    upper = estimate + r if sides in ("two", "upper") else math.inf
    return Interval(lower, upper, estimate)


def _resolve_rho(rho: float | None, information: float, effective_n: float, alpha: float) -> float:
    if rho is not None:
        if not rho > 0:
            raise ValueError(f"rho: must be > 0 (got {rho!r})")
        return float(rho)
    # Scale-free default: I/effective_n is a plug-in for 1/σ² (consistent, so the CS stays
    # asymptotically valid), and the design point is DEFAULT_DESIGN_EFFECTIVE_N samples.
    per_sample = information / effective_n
    return default_rho(per_sample * DEFAULT_DESIGN_EFFECTIVE_N, alpha)


def mean_difference_cs(
    candidate: Moments,
    baseline: Moments,
    alpha: float,
    *,
    rho: float | None = None,
    sides: Sides = "two",
) -> Interval:
    """CS for Δ = mean_candidate − mean_baseline from two independent streams.

    Unbounded (−inf, inf) while either arm has fewer than 2 samples or the estimated
    variance of the difference is zero (no usable information yet).
    """
    _check_alpha(alpha)
    estimate = candidate.mean - baseline.mean
    if candidate.n < 2 or baseline.n < 2:
        return Interval(-math.inf, math.inf, estimate if candidate.n and baseline.n else math.nan)
    var = float(two_sample_variance(candidate.variance, candidate.n, baseline.variance, baseline.n))
    if not var > 0:
        return Interval(-math.inf, math.inf, estimate)
    info = 1.0 / var
    eff_n = 1.0 / (1.0 / candidate.n + 1.0 / baseline.n)
    return _interval(estimate, info, alpha, _resolve_rho(rho, info, eff_n, alpha), sides)


def stratified_difference_cs(
    strata: Sequence[tuple[Moments, Moments]],
    alpha: float,
    *,
    rho: float | None = None,
    sides: Sides = "two",
) -> Interval:
    """CS for Δ combining per-stratum differences (strata = rollout steps, i.e. shares).

    Each stratum k (one canary weight) gives D_k with information I_k; the combined
    S = Σ I_k D_k is a sum of martingale pieces with variance process Σ I_k, so the
    inverse-variance estimate D = S/ΣI_k with information ΣI_k uses the same mixture
    boundary. Within a stratum the share is constant, so a base rate drifting over time
    hits both arms alike; pooling across strata (the ramp trap, Simpson's paradox) does
    not. Strata where either arm has < 2 samples or zero variance carry no information
    and are skipped.
    """
    _check_alpha(alpha)
    s = 0.0
    info = 0.0
    eff_n = 0.0
    for cand, base in strata:
        if cand.n < 2 or base.n < 2:
            continue
        var = float(two_sample_variance(cand.variance, cand.n, base.variance, base.n))
        if not var > 0:
            continue
        i_k = 1.0 / var
        s += i_k * (cand.mean - base.mean)
        info += i_k
        eff_n += 1.0 / (1.0 / cand.n + 1.0 / base.n)
    if info == 0:
        return Interval(-math.inf, math.inf, math.nan)
    return _interval(s / info, info, alpha, _resolve_rho(rho, info, eff_n, alpha), sides)


def paired_mean_cs(
    differences: Moments,
    alpha: float,
    *,
    rho: float | None = None,
    sides: Sides = "two",
    prior_variance: float = 0.0,
) -> Interval:
    """One-sample CS for the mean of paired differences d_i (shadow: same request, both models).

    With d_i = metric_c(i) − metric_p(i) this is a CS for Δ directly; every request counts
    for both models, and Var(d) is small when the models mostly agree. `prior_variance`
    (see `prior_variance_floor`) keeps a stream with no or little spread from giving an
    infinite or a falsely narrow interval; 0 = plug-in only.
    """
    _check_alpha(alpha)
    estimate = differences.mean if differences.n else math.nan
    if differences.n < 2:
        return Interval(-math.inf, math.inf, estimate)
    sample = prior_variance_floor(differences.variance, differences.n, prior_variance)
    var = sample / differences.n
    if not var > 0:
        return Interval(-math.inf, math.inf, estimate)
    info = 1.0 / var
    return _interval(
        estimate, info, alpha, _resolve_rho(rho, info, float(differences.n), alpha), sides
    )
