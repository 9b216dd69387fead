"""Normal-mixture confidence sequences with the variance taken under each hypothesis (score form).

The plug-in normal mixture (`_mixture.py`) estimates Var(D̂) from each arm's own sample. That
is what makes it too narrow on the "looks good" side exactly where a PASS is most dangerous:
a candidate that has seen few events (0–3 errors: σ̂² ≈ 0) or none of its large latencies yet
has a small σ̂², and its small σ̂² comes together with a small mean (the two are correlated),
so the upper bound drops below the threshold by chance. Measured at the boundary (the
candidate exactly as bad as allowed), false PASS reached 6–14% at α = 5%.

The score form removes that correlation. To test the hypothesis Δ = h, take the variance the
data would have IF Δ = h, estimated from both arms together under that constraint (the
restricted estimate of score tests: Wilson's interval for one proportion, Miettinen–Nurminen
for two). The statistic S(h) = Σ_k I_k(h)·(D̂_k − h) over the strata k (canary-weight steps)
has variance process Σ_k I_k(h) under the hypothesis, and the same two-sided normal-mixture
boundary B(I) = √((I+ρ) log((I+ρ)/(ρα²))) applies (Howard et al. 2021). The confidence
sequence is {h : |S(h)| ≤ B(ΣI(h))}; a decision at a threshold needs S and B at that threshold
only, so judging stays O(strata).

- Proportions (accuracy, error rate, agreement): under Δ = h the baseline's rate is the
  pooled rate shifted by h (p_b = (x_c + x_b − n_c·h)/(n_c + n_b), the linearised restricted
  MLE) with half a pseudo-event, and p_c = p_b + h. A candidate with no events yet gets the
  variance its rate would have at the threshold, not zero.
- Scale family (latency means with `max_ratio`): under μ_c = κμ_b the candidate's latencies
  are the baseline's × κ, so both arms' variance comes from the pooled sample of b and c/κ.
  The candidate's variance is then carried by the baseline's many samples (which have seen
  the tail), not by its own few.

Still asymptotic (a normal mixture), but with a variance that does not rest on the data that
decide the verdict; the boundary simulations (tests/analysis/test_false_pass_simulation.py)
check both error sides at ≤ α.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from coalmine.analysis.sequential._decision import Interval
from coalmine.analysis.sequential._mixture import DEFAULT_DESIGN_EFFECTIVE_N, prior_variance_floor
from coalmine.analysis.sequential._moments import Moments

__all__ = [
    "mean_cs",
    "mean_z",
    "proportion_cs",
    "proportion_difference_cs",
    "proportion_difference_z",
    "proportion_ratio_cs",
    "proportion_ratio_z",
    "proportion_z",
    "scaled_difference_cs",
    "scaled_difference_z",
    "shifted_difference_cs",
]

# (n_c, x_c, n_b, x_b) per stratum: counts of 0/1 outcomes
Counts = tuple[float, float, float, float]
_ITERATIONS = 30
_MIN_RATIO = 1e-6


def _var01(p_hypothesis: float, p_observed: float) -> float:
    """Variance of a 0/1 outcome: the larger of the hypothesis's and the sample's.

    The hypothesis's variance guards the PASS side (a candidate with no events yet); the
    sample's guards the FAIL side (a burst of events makes the arm's own variance large,
    and a rare-event count is skewed to the right). Taking the larger is decided in
    advance and only ever widens the CS.
    """
    return max(p_hypothesis * (1.0 - p_hypothesis), p_observed * (1.0 - p_observed))


def _boundary(info: float, eff_n: float, alpha: float) -> float:
    """Two-sided normal-mixture boundary on the S scale, ρ tuned at the design sample size."""
    la = 2.0 * math.log(1.0 / alpha)  # default_rho, inlined: this runs ~50 times a judgement
    rho = info / eff_n * DEFAULT_DESIGN_EFFECTIVE_N / (la + math.log(1.0 + la))
    tot = info + rho
    return math.sqrt(tot * math.log(tot / (rho * alpha * alpha)))


def proportion_difference_z(strata: Sequence[Counts], h: float, alpha: float) -> float:
    """S(h)/B(h) for Δ = p_c − p_b = h: > 1 means Δ > h, < −1 means Δ < h (at level α)."""
    s = info = eff_n = 0.0
    for n_c, x_c, n_b, x_b in strata:
        if n_c < 1 or n_b < 1:
            continue
        tot = n_c + n_b + 1.0
        pad = 0.5 / tot
        lo, hi = max(0.0, -h) + pad, min(1.0, 1.0 - h) - pad
        if lo >= hi:  # h at the edge of [−1, 1]: nothing to test
            continue
        p_b = min(max((x_c + x_b + 0.5 - n_c * h) / tot, lo), hi)
        p_c = p_b + h
        var = _var01(p_c, x_c / n_c) / n_c + _var01(p_b, x_b / n_b) / n_b
        i_k = 1.0 / var
        s += i_k * (x_c / n_c - x_b / n_b - h)
        info += i_k
        eff_n += 1.0 / (1.0 / n_c + 1.0 / n_b)
    if info == 0.0:
        return 0.0
    return s / _boundary(info, eff_n, alpha)


def proportion_z(n: float, x: float, h: float, alpha: float) -> float:
    """S(h)/B(h) for one proportion p = h (Wilson-type): > 1 means p > h, < −1 means p < h."""
    if n < 1:
        return 0.0
    pad = 0.5 / (n + 1.0)
    p = min(max(h, pad), 1.0 - pad)
    info = n / (p * (1.0 - p))
    return info * (x / n - h) / _boundary(info, n, alpha)


def _invert(z: Callable[[float], float], lo: float, hi: float, estimate: float) -> Interval:
    """{h : |z(h)| ≤ 1} for z decreasing in h, within [lo, hi], bracketing outward from the
    estimate (where z ≈ 0) and then bisecting; an end that no data excludes stays at lo/hi."""
    tiny = 1e-9 * (hi - lo)
    start = min(max(estimate, lo + tiny), hi - tiny) if estimate == estimate else 0.5 * (lo + hi)

    def root(target: float, edge: float) -> float:
        inner, step = start, 2e-3 * (hi - lo)
        while True:
            outer = start + step if edge > start else start - step
            if (outer >= edge) if edge > start else (outer <= edge):
                outer = edge
            beyond = z(outer) <= target if target < 0 else z(outer) > target
            if beyond:
                break
            if outer == edge:
                return edge
            inner, step = outer, step * 4.0
        # Illinois (regula falsi with halving): z is smooth, so a few steps suffice.
        a, b = inner, outer
        fa, fb = z(a) - target, z(b) - target
        side = 0
        for _ in range(_ITERATIONS):
            if fb == fa or abs(b - a) <= 1e-9 * (hi - lo):
                break
            m = b - fb * (b - a) / (fb - fa)
            fm = z(m) - target
            if abs(fm) < 1e-9:
                return m
            if (fm > 0) == (fb > 0):
                b, fb = m, fm
                if side == -1:
                    fa *= 0.5
                side = -1
            else:
                a, fa = m, fm
                if side == 1:
                    fb *= 0.5
                side = 1
        # report the end of the bracket that lies inside the CS (never narrower)
        return b if fb * (1 if target > 0 else -1) <= 0 else a

    return Interval(root(1.0, lo), root(-1.0, hi), estimate)


def _pooled(strata: Sequence[Counts]) -> tuple[float, float, float, float]:
    n_c = sum(s[0] for s in strata)
    x_c = sum(s[1] for s in strata)
    n_b = sum(s[2] for s in strata)
    x_b = sum(s[3] for s in strata)
    return n_c, x_c, n_b, x_b


def proportion_difference_cs(strata: Sequence[Counts], alpha: float) -> Interval:
    """CS for Δ = p_c − p_b (stratified), inverting the score statistic; (−1, 1) before data."""
    live = [s for s in strata if s[0] >= 1 and s[2] >= 1]
    if not live:
        return Interval(-math.inf, math.inf, math.nan)
    num = sum(1.0 / (1.0 / s[0] + 1.0 / s[2]) * (s[1] / s[0] - s[3] / s[2]) for s in live)
    den = sum(1.0 / (1.0 / s[0] + 1.0 / s[2]) for s in live)
    return _invert(lambda h: proportion_difference_z(live, h, alpha), -1.0, 1.0, num / den)


def proportion_cs(n: float, x: float, alpha: float) -> Interval:
    """CS for one proportion (Wilson-type score mixture); [0, 1] before data."""
    if n < 1:
        return Interval(0.0, 1.0, math.nan)
    return _invert(lambda h: proportion_z(n, x, h, alpha), 0.0, 1.0, x / n)


def _scaled_parts(
    strata: Sequence[tuple[Moments, Moments]],
) -> list[tuple[int, float, float, float, int, float, float, float]]:
    """Per stratum with ≥ 2 samples per arm: (n, Σx, Σx², sample variance) of each arm."""
    return [
        (c.n, c.total, c.total_sq, c.variance, b.n, b.total, b.total_sq, b.variance)
        for c, b in strata
        if c.n >= 2 and b.n >= 2
    ]


def _scaled_z(
    parts: Sequence[tuple[int, float, float, float, int, float, float, float]],
    kappa: float,
    alpha: float,
    shift: float = 0.0,
) -> float:
    """S/B for μ_c = κ·μ_b + shift; under it (c − shift)/κ and b share one distribution."""
    s = info = eff_n = 0.0
    k2 = kappa * kappa
    for nc, sc, scc, vc, nb, sb, sbb, vb in parts:
        n = nc + nb
        c1 = (sc - nc * shift) / kappa  # Σ (c − shift)/κ
        c2 = (scc - 2.0 * shift * sc + nc * shift * shift) / k2  # Σ ((c − shift)/κ)²
        tot = c1 + sb
        var0 = max(c2 + sbb - tot * tot / n, 0.0) / (n - 1)
        if not var0 > 0:
            continue
        var = max(k2 * var0, vc) / nc + k2 * max(var0, vb) / nb
        i_k = 1.0 / var
        s += i_k * (sc / nc - shift - kappa * sb / nb)
        info += i_k
        eff_n += 1.0 / (1.0 / nc + 1.0 / nb)
    if info == 0.0:
        return 0.0
    return s / _boundary(info, eff_n, alpha)


def shifted_difference_cs(
    strata: Sequence[tuple[Moments, Moments]], threshold: float, alpha: float
) -> tuple[float, Interval]:
    """(z at Δ = threshold, CS of Δ = μ_c − μ_b) from the shift-family score statistic.

    Under Δ = h, c − h and b share one distribution, so each arm's variance is at least the
    pooled one (carried by the arm with more samples, which has seen more of the tail).
    """
    parts = _scaled_parts(strata)
    z = _scaled_z(parts, 1.0, alpha, threshold)
    if not parts:
        return z, Interval(-math.inf, math.inf, math.nan)
    w = [1.0 / (1.0 / p[0] + 1.0 / p[4]) for p in parts]
    est = sum(wi * (p[1] / p[0] - p[5] / p[4]) for wi, p in zip(w, parts, strict=True)) / sum(w)
    sd = max(math.sqrt(max(p[3], p[7])) for p in parts) or 1.0
    lo, hi = est - 1e3 * sd, est + 1e3 * sd
    iv = _invert(lambda h: _scaled_z(parts, 1.0, alpha, h), lo, hi, est)
    return z, Interval(
        -math.inf if iv.lower <= lo else iv.lower, math.inf if iv.upper >= hi else iv.upper, est
    )


def scaled_difference_z(
    strata: Sequence[tuple[Moments, Moments]], kappa: float, alpha: float
) -> float:
    """S/B for μ_c − κ·μ_b = 0, each arm's variance at least the pooled one of b and c/κ.

    > 1: μ_c > κμ_b; < −1: μ_c < κμ_b. Strata with fewer than 2 samples in an arm are
    skipped. As for proportions, each arm keeps its own variance when that is larger.
    """
    return _scaled_z(_scaled_parts(strata), kappa, alpha)


def scaled_difference_cs(
    strata: Sequence[tuple[Moments, Moments]], kappa: float, alpha: float
) -> tuple[float, float, Interval]:
    """(z at κ, CS of the ratio μ_c/μ_b) from the scale-family score statistic.

    The ratio CS inverts z over κ' (decreasing in κ'); its estimate is the stratified ratio
    of means.
    """
    parts = _scaled_parts(strata)
    z = _scaled_z(parts, kappa, alpha)
    if not parts:
        return z, math.nan, Interval(0.0, math.inf, math.nan)
    w = [1.0 / (1.0 / p[0] + 1.0 / p[4]) for p in parts]
    cm = sum(wi * p[1] / p[0] for wi, p in zip(w, parts, strict=True))
    bm = sum(wi * p[5] / p[4] for wi, p in zip(w, parts, strict=True))
    est = cm / bm if bm > 0 else math.nan
    hi = max(16.0, 4.0 * est) if est == est else 16.0
    iv = _invert(lambda k: _scaled_z(parts, k, alpha), _MIN_RATIO, hi, est)
    lower = 0.0 if iv.lower <= _MIN_RATIO else iv.lower
    upper = math.inf if iv.upper >= hi else iv.upper
    return z, est, Interval(lower, upper, est)


def proportion_ratio_z(strata: Sequence[Counts], kappa: float, alpha: float) -> float:
    """S/B for p_c = κ·p_b (error rate with `max_ratio`, no share known for the count test).

    Under the hypothesis the restricted baseline rate is (x_c + x_b + ½)/(κn_c + n_b + 1).
    > 1: p_c > κp_b; < −1: p_c < κp_b.
    """
    s = info = eff_n = 0.0
    for n_c, x_c, n_b, x_b in strata:
        if n_c < 1 or n_b < 1:
            continue
        p_b = (x_c + x_b + 0.5) / (kappa * n_c + n_b + 1.0)
        p_b = min(p_b, (1.0 - 0.5 / (n_c + 1.0)) / max(kappa, 1.0))
        p_c = kappa * p_b
        var = _var01(p_c, x_c / n_c) / n_c + kappa * kappa * _var01(p_b, x_b / n_b) / n_b
        i_k = 1.0 / var
        s += i_k * (x_c / n_c - kappa * x_b / n_b)
        info += i_k
        eff_n += 1.0 / (1.0 / n_c + 1.0 / n_b)
    if info == 0.0:
        return 0.0
    return s / _boundary(info, eff_n, alpha)


def proportion_ratio_cs(strata: Sequence[Counts], alpha: float) -> Interval:
    """CS for p_c/p_b inverting `proportion_ratio_z`; [0, inf) before data."""
    live = [s for s in strata if s[0] >= 1 and s[2] >= 1]
    if not live:
        return Interval(0.0, math.inf, math.nan)
    n_c, x_c, n_b, x_b = _pooled(live)
    est = (x_c / n_c) / (x_b / n_b) if x_b else math.nan
    hi = 1e3
    iv = _invert(lambda k: proportion_ratio_z(live, k, alpha), _MIN_RATIO, hi, est)
    lower = 0.0 if iv.lower <= _MIN_RATIO else iv.lower
    upper = math.inf if iv.upper >= hi else iv.upper
    return Interval(lower, upper, est)


def mean_z(
    m: Moments, h: float, alpha: float, prior_variance: float = 0.0, per_value: float = 1.0
) -> float:
    """S(h)/B(h) for one mean μ = h (paired differences, or one stream's own values).

    The variance is the one the data have around the hypothesis, Σ(x − h)²/n = s²·(n−1)/n +
    (x̄ − h)² (the restricted estimate of a score test), so a mean that sits far from h by
    chance brings its own distance into the variance instead of a small s². Paired
    differences that are 0 on every request (an identical shadow) then test h ≠ 0 with
    variance h²: PASS after a few dozen pairs, where the plug-in gave (−∞, ∞) for ever.
    `prior_variance` (see `prior_variance_floor`) widens early looks further; `per_value`:
    samples each value summarises (a batch AUC: its batch), for ρ's design point.
    > 1: μ > h; < −1: μ < h.
    """
    n = m.n
    if n < 2:
        return 0.0
    var = max(m.total_sq - 2.0 * h * m.total + n * h * h, 0.0) / n
    var = prior_variance_floor(var, n, prior_variance)
    if not var > 0:
        return 0.0
    info = n / var
    return info * (m.total / n - h) / _boundary(info, n * per_value, alpha)


def mean_cs(
    m: Moments, alpha: float, prior_variance: float = 0.0, per_value: float = 1.0
) -> Interval:
    """CS for one mean inverting `mean_z`; (−∞, ∞) before 2 samples."""
    if m.n < 2:
        return Interval(-math.inf, math.inf, m.mean if m.n else math.nan)
    est = m.mean
    width = 1e3 * max(math.sqrt(max(m.variance, prior_variance)), abs(est), 1e-9)
    lo, hi = est - width, est + width
    iv = _invert(lambda h: mean_z(m, h, alpha, prior_variance, per_value), lo, hi, est)
    return Interval(
        -math.inf if iv.lower <= lo else iv.lower, math.inf if iv.upper >= hi else iv.upper, est
    )
