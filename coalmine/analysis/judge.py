"""Judge one criterion on one slice's statistics (pure: no I/O, no clock).

`judge(criterion, evidence, alpha)` picks the anytime-valid construction that fits the data:

- canary (different requests per arm): normal-mixture CS of Δ stratified by canary-weight
  step — per-step differences combined, never the pooled means, so a base rate drifting
  while the share ramps cannot fake a difference (the ramp trap). The variance is taken under
  the hypothesis tested (score form, sequential/_score.py: proportions for 0/1 metrics, a
  scale family for `max_ratio`, a shift family for `margin`), not from each arm's own
  sample: the plug-in variance is too small exactly when a candidate has seen few events or
  none of its large values yet, and PASSed such regressions more often than α;
- shadow (same request answered by both): the paired CS on d_i = m_c(i) − m_b(i); the same
  for a paired canary's quality metrics (the stable version also answered each canary
  request, role "paired"), whose error rate and latency stay judged as a canary's;
- error rate with `max_ratio` in a canary: the count e-value (Lindon et al.), which
  conditions on the share at each error event and so stays valid under an unbalanced,
  ramping split;
- latency quantiles: per-arm quantile confidence sequences (Howard & Ramdas 2022) at α/2
  each, combined into bounds on the ratio; p99 cannot PASS before its upper bound is finite
  (~3,000 samples at α = 0.05), only FAIL;
- agreement / mean |difference| with `margin`: the paired CS on d_i = a_c(i) − a_b(i),
  the candidate's and a fresh baseline's agreement with production on the same request
  (the noise floor, Diffy's practice); with `min` / `max`: a one-sample CS on the
  candidate's own agreement;
- drift: PSI / JS on merged bins, descriptive (see drift.py);
- `critical` with `error_classes`: any listed error class in the candidate → FAIL at once.

A criterion with both a relative threshold and an absolute limit runs both tests at α/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coalmine.analysis import drift
from coalmine.analysis.criteria import Criterion
from coalmine.analysis.metrics import AUC_BATCH, FLOOR, ArmSlice, SliceStats, drift_order
from coalmine.analysis.result import CriterionResult
from coalmine.analysis.sequential import (
    ErrorCountEValue,
    Interval,
    LogHistogram,
    Moments,
    Verdict,
    decide_higher_better,
    decide_lower_better,
    mean_cs,
    mean_z,
    paired_mean_cs,
    proportion_cs,
    proportion_difference_cs,
    proportion_difference_z,
    proportion_ratio_cs,
    proportion_ratio_z,
    quantile_cs,
    scaled_difference_cs,
    shifted_difference_cs,
    stratified_difference_cs,
)

__all__ = ["Evidence", "judge", "quantile_interval"]

NAN = math.nan
INF = math.inf


@dataclass
class Evidence:
    """What the judge sees for one slice: the statistics and how they were collected."""

    stats: SliceStats
    mode: str  # "canary" | "shadow"
    slice: str | None = None  # None = all traffic
    evalue: ErrorCountEValue | None = None  # count test of this criterion, canary + max_ratio


@dataclass
class _Test:
    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    threshold: float
    kind: str  # "diff" | "ratio" | "value"
    cand: float = NAN
    base: float = NAN


def _scaled(m: Moments, k: float) -> Moments:
    return Moments(m.n, k * m.total, k * k * m.total_sq)


BINARY_KEYS = frozenset({"error", "accuracy", "agree", "agree" + FLOOR})


def _floored(m: Moments, floor: float) -> Moments:
    """Same n and mean, variance at least `floor` (same statistics otherwise)."""
    if m.n < 2 or m.variance >= floor:
        return m
    return Moments(m.n, m.total, floor * (m.n - 1) + m.total * m.total / m.n)


def _binary(m: Moments) -> Moments:
    """0/1 data: variance at least p̃(1 − p̃) with p̃ = (x + ½)/(n + 1).

    With no event yet (no error in either arm, every answer right) the sample variance is
    0 and the normal mixture has no information; the half pseudo-count lets "0 errors in
    10,000 calls" PASS a margin instead of staying INCONCLUSIVE for ever. It is a plug-in
    for p(1 − p), which the asymptotic CS uses anyway.
    """
    p = (m.total + 0.5) / (m.n + 1)
    return _floored(m, p * (1 - p))


def _binary_paired(m: Moments) -> Moments:
    """Paired 0/1 differences: variance at least that of one pseudo-disagreement."""
    return _floored(m, 1.0 / (m.n + 1))


def _strata(
    c: ArmSlice, b: ArmSlice, key: str, kappa: float = 1.0
) -> list[tuple[Moments, Moments]]:
    out = []
    for step in sorted(c.steps.keys() & b.steps.keys()):
        mc, mb = c.steps[step].moments.get(key), b.steps[step].moments.get(key)
        if mc is not None and mb is not None:
            if key in BINARY_KEYS:
                mc, mb = _binary(mc), _binary(mb)
            out.append((mc, _scaled(mb, kappa) if kappa != 1.0 else mb))
    return out


# Keys of what a served call is: its error and its latency. In a paired canary (the stable
# version also answers a copy of each canary request) these stay judged on each version's
# own served calls; a mirrored copy is neither served nor timed like one.
_SERVED_KEYS = frozenset({"error", "latency"})


def _is_paired(ev: Evidence, key: str) -> bool:
    """Judge `key` on same-request pairs: always in shadow; in a paired canary, quality only."""
    if not ev.stats.pairs.has(key):
        return False
    return ev.mode == "shadow" or key not in _SERVED_KEYS


def _pairs(s: SliceStats, key: str, kappa: float = 1.0) -> Moments:
    m = s.pairs.paired(key, kappa)
    return _binary_paired(m) if key in BINARY_KEYS and kappa == 1.0 else m


def _prior(s: SliceStats, key: str, kappa: float = 1.0, scale: float = 0.0) -> float:
    """Prior variance of the paired differences c − κ·b of `key` (see prior_variance_floor).

    What the differences would have if pairing told nothing (each side's own variance), and
    at least scale², the size of difference the test must resolve (the margin, or (κ − 1)
    times the baseline mean). An identical shadow (d_i = 0 on every request) then PASSes a
    margin after a few dozen pairs instead of never. 0/1 keys have their own floor.
    """
    if key in BINARY_KEYS:
        return 0.0
    c, b = s.pairs.side(key, "c"), s.pairs.side(key, "b")
    floor = scale * scale if math.isfinite(scale) else 0.0
    return max(c.variance + kappa * kappa * b.variance, floor)


def _one_sample(m: Moments, alpha: float, key: str = "") -> Interval:
    """CS for one stream's own mean: Wilson-type score CS for 0/1 values, else `mean_cs`."""
    if key in BINARY_KEYS:
        return proportion_cs(m.n, m.total, alpha)
    return mean_cs(m, alpha)


def _mean_test(
    m: Moments, h: float, alpha: float, key: str, prior: float, *, higher: bool
) -> tuple[Verdict, Interval]:
    """Verdict at Δ = h and CS of one stream's mean (paired differences, higher = better).

    0/1 keys keep the plug-in paired CS with their pseudo-disagreement floor; other values
    take the score form (`mean_z`: the variance around h, at least `prior` early), which
    does not go infinite, nor falsely narrow, when the stream has no spread of its own.
    """
    if key in BINARY_KEYS:
        iv = paired_mean_cs(m, alpha)
        return (decide_higher_better(iv, -h) if higher else decide_lower_better(iv, h)), iv
    per = AUC_BATCH if key == "auc" else 1.0  # a batch AUC stands for a batch of labels
    z = mean_z(m, h, alpha, prior, per)
    return _side(z, higher=higher), mean_cs(m, alpha, prior, per)


def _limit(
    m: Moments, alpha: float, key: str, prior: float, maximum: float | None, minimum: float | None
) -> tuple[Verdict, Interval]:
    """Verdict and CS of one stream's own mean against an absolute limit."""
    if key in BINARY_KEYS:
        iv = proportion_cs(m.n, m.total, alpha)
        return _decide_limit(iv, maximum=maximum, minimum=minimum), iv
    limit = maximum if maximum is not None else minimum
    assert limit is not None
    return _mean_test(m, limit, alpha, key, prior, higher=maximum is None)


def _count_strata(c: ArmSlice, b: ArmSlice, key: str) -> list[tuple[float, float, float, float]]:
    """(n_c, x_c, n_b, x_b) per canary-weight step of a 0/1 metric."""
    out = []
    for step in sorted(c.steps.keys() & b.steps.keys()):
        mc, mb = c.steps[step].moments.get(key), b.steps[step].moments.get(key)
        if mc is not None and mb is not None and mc.n and mb.n:
            out.append((float(mc.n), mc.total, float(mb.n), mb.total))
    return out


def _raw_strata(c: ArmSlice, b: ArmSlice, key: str) -> list[tuple[Moments, Moments]]:
    out = []
    for step in sorted(c.steps.keys() & b.steps.keys()):
        mc, mb = c.steps[step].moments.get(key), b.steps[step].moments.get(key)
        if mc is not None and mb is not None:
            out.append((mc, mb))
    return out


def _side(z: float, *, higher: bool) -> Verdict:
    """Verdict from the score statistic at the threshold (|z| > 1: outside the CS)."""
    if z > 1.0:
        return Verdict.PASS if higher else Verdict.FAIL
    if z < -1.0:
        return Verdict.FAIL if higher else Verdict.PASS
    return Verdict.INCONCLUSIVE


def _score_test(c: Criterion, ev: Evidence, key: str, alpha: float) -> _Test | None:
    """Canary per-example means: the score-form CS (see module doc).

    0/1 metrics get the proportion forms; other means the scale (max_ratio) or shift
    (margin) form. None where the plug-in construction stays: AUC batches, RMSE margins.
    """
    s = ev.stats
    cand, base = s.candidate.pooled(key), s.baseline.pooled(key)
    cv, bv = (cand.mean if cand.n else NAN), (base.mean if base.n else NAN)
    if key in BINARY_KEYS:
        strata = _count_strata(s.candidate, s.baseline, key)
        if c.max_ratio is not None:
            kappa = float(c.max_ratio)
            verdict = _side(proportion_ratio_z(strata, kappa, alpha), higher=False)
            iv = proportion_ratio_cs(strata, alpha)
            ratio = cv / bv if bv else NAN
            return _Test(verdict, ratio, iv.lower, iv.upper, kappa, "ratio", cv, bv)
        higher = c.higher_is_better
        margin = float(c.margin or 0.0)
        h = -margin if higher else margin
        verdict = _side(proportion_difference_z(strata, h, alpha), higher=higher)
        iv = proportion_difference_cs(strata, alpha)
        estimate = iv.estimate if math.isfinite(iv.estimate) else (cv - bv)
        return _Test(verdict, estimate, iv.lower, iv.upper, h, "diff", cv, bv)
    rmse = c.metric == "rmse"
    if c.spec.family == "auc" or (rmse and c.max_ratio is None):
        return None  # batch AUCs are bounded and few; RMSE margins translate at the baseline
    raw = _raw_strata(s.candidate, s.baseline, key)
    if c.max_ratio is not None:
        # Under "ratio = κ" the candidate's values are the baseline's × κ (a scale family:
        # latency, |error|, squared error with κ²), so both arms' variance comes from
        # the pooled sample of b and c/κ, which has seen the tail.
        kappa = float(c.max_ratio) ** (2 if rmse else 1)
        z, est, iv = scaled_difference_cs(raw, kappa, alpha)
        lo, hi = iv.lower, iv.upper
        if rmse:
            est, lo, hi, cv, bv = (
                math.sqrt(x) if math.isfinite(x) and x >= 0 else x for x in (est, lo, hi, cv, bv)
            )
        return _Test(_side(z, higher=False), est, lo, hi, float(c.max_ratio), "ratio", cv, bv)
    # A margin: under "Δ = h" the candidate's values are the baseline's shifted by h.
    higher = c.higher_is_better
    margin = float(c.margin or 0.0)
    h = -margin if higher else margin
    z, iv = shifted_difference_cs(raw, h, alpha)
    estimate = iv.estimate if math.isfinite(iv.estimate) else (cv - bv)
    return _Test(_side(z, higher=higher), estimate, iv.lower, iv.upper, h, "diff", cv, bv)


def _decide_limit(iv: Interval, *, maximum: float | None, minimum: float | None) -> Verdict:
    if maximum is not None:
        if iv.upper <= maximum:
            return Verdict.PASS
        if iv.lower > maximum:
            return Verdict.FAIL
        return Verdict.INCONCLUSIVE
    assert minimum is not None
    if iv.lower >= minimum:
        return Verdict.PASS
    if iv.upper < minimum:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


def _mean_key_test(c: Criterion, ev: Evidence, key: str, alpha: float) -> _Test:
    """Relative test (margin or max_ratio) on a per-example mean metric."""
    s = ev.stats
    higher = c.higher_is_better
    cand, base = s.candidate.pooled(key), s.baseline.pooled(key)
    cv, bv = (cand.mean if cand.n else NAN), (base.mean if base.n else NAN)
    paired = _is_paired(ev, key)
    if not paired:
        scored = _score_test(c, ev, key, alpha)
        if scored is not None:
            return scored
    rmse = c.metric == "rmse"
    if c.max_ratio is not None:
        kappa = c.max_ratio**2 if rmse else c.max_ratio
        if paired:
            scale = (kappa - 1.0) * bv if bv == bv else 0.0
            verdict, iv = _mean_test(_pairs(s, key, kappa), 0.0, alpha, key,
                                     _prior(s, key, kappa, scale), higher=False)  # fmt: skip
        else:
            iv = stratified_difference_cs(_strata(s.candidate, s.baseline, key, kappa), alpha)
            verdict = decide_lower_better(iv, 0.0)
        # Shown on the ratio scale: c/b, and the CS of c − κb divided by the baseline mean.
        ratio = cv / bv if bv else NAN
        lo = kappa + iv.lower / bv if bv else NAN
        hi = kappa + iv.upper / bv if bv else NAN
        if rmse:
            ratio, lo, hi = (
                math.sqrt(max(x, 0.0)) if math.isfinite(x) else x for x in (ratio, lo, hi)
            )
            cv, bv = math.sqrt(cv), math.sqrt(bv)
        return _Test(verdict, ratio, lo, hi, c.max_ratio, "ratio", cv, bv)
    margin = c.margin or 0.0
    h = -margin if higher else margin
    if rmse:
        # RMSE margin: judged on MSE with the threshold translated at the baseline's current
        # RMSE (a plug-in; max_ratio is the exact form for RMSE).
        rb = math.sqrt(bv) if bv == bv else NAN
        h = (rb + margin) ** 2 - rb * rb if math.isfinite(rb) else INF
    if paired and math.isfinite(h):
        pv, iv = _mean_test(_pairs(s, key), h, alpha, key, _prior(s, key, 1.0, h), higher=higher)
    else:
        iv = stratified_difference_cs(_strata(s.candidate, s.baseline, key), alpha)
        pv = None
    if rmse:
        verdict = pv or decide_lower_better(iv, h)
        to_rmse = lambda d: math.sqrt(max(bv + d, 0.0)) - rb  # noqa: E731
        return _Test(verdict, to_rmse(iv.estimate) if math.isfinite(iv.estimate) else NAN,
                     to_rmse(iv.lower) if math.isfinite(iv.lower) else -INF,
                     to_rmse(iv.upper) if math.isfinite(iv.upper) else INF,
                     margin, "diff", math.sqrt(cv) if cv == cv else NAN, rb)  # fmt: skip
    if pv is not None:
        verdict = pv
    else:
        verdict = decide_higher_better(iv, margin) if higher else decide_lower_better(iv, margin)
    estimate = iv.estimate if math.isfinite(iv.estimate) else (cv - bv)
    return _Test(verdict, estimate, iv.lower, iv.upper, h, "diff", cv, bv)


def _resource_test(c: Criterion, ev: Evidence, alpha: float) -> _Test:
    """cpu/memory relative to the baseline, from window samples (analysis/resources.py)."""
    from coalmine.analysis.resources import peak_memory_verdict, resource_difference_cs

    a, b, key = ev.stats.candidate, ev.stats.baseline, c.spec.key
    cand, base = a.pooled(key), b.pooled(key)
    cv, bv = (cand.mean if cand.n else NAN), (base.mean if base.n else NAN)
    kappa = c.max_ratio if c.max_ratio is not None else 1.0
    if c.metric == "memory":  # peaks, not means (a leak is a trend)
        pc, pb = a.pooled("memory_peak").total, b.pooled("memory_peak").total
        verdict = peak_memory_verdict(pc, cand.n, pb, base.n, max_ratio=c.max_ratio,
                                      margin=c.margin)  # fmt: skip
        decided = verdict is not Verdict.INCONCLUSIVE
        if c.max_ratio is not None:
            x = pc / pb if decided and pb else NAN
            return _Test(verdict, x, x if decided else -INF, x if decided else INF, kappa,
                         "ratio", pc, pb)  # fmt: skip
        x = pc - pb if decided else NAN
        return _Test(verdict, x, x if decided else -INF, x if decided else INF,
                     c.margin or 0.0, "diff", pc, pb)  # fmt: skip
    iv = resource_difference_cs(cand, a.pooled(key + "_lag"), base, b.pooled(key + "_lag"),
                                kappa, alpha)  # fmt: skip
    if c.max_ratio is None:
        margin = c.margin or 0.0
        return _Test(decide_lower_better(iv, margin), cv - bv, iv.lower, iv.upper, margin,
                     "diff", cv, bv)  # fmt: skip
    lo = kappa + iv.lower / bv if bv else NAN
    hi = kappa + iv.upper / bv if bv else NAN
    return _Test(decide_lower_better(iv, 0.0), cv / bv if bv else NAN, lo, hi, kappa, "ratio",
                 cv, bv)  # fmt: skip


def _limit_test(c: Criterion, ev: Evidence, key: str, alpha: float) -> _Test:
    """Absolute limit on the candidate's own mean."""
    m = ev.stats.candidate.pooled(key)
    rmse = c.metric == "rmse"  # judged on the mean squared error, its limit squared
    top, bottom = ((x * x if rmse and x is not None else x) for x in (c.max, c.min))
    # the prior spread: production's own values of the metric
    verdict, iv = _limit(m, alpha, key, ev.stats.baseline.pooled(key).variance, top, bottom)
    lo, hi, est = iv.lower, iv.upper, (m.mean if m.n else NAN)
    if rmse:
        lo = math.sqrt(max(lo, 0.0)) if math.isfinite(lo) else lo
        hi, est = math.sqrt(max(hi, 0.0)), math.sqrt(est) if est == est else est
    threshold = c.max if c.max is not None else c.min
    return _Test(verdict, est, lo, hi, float(threshold), "value", est)  # type: ignore[arg-type]


def quantile_interval(hist: LogHistogram, p: float, alpha: float) -> Interval:
    """CS for the p-quantile (Howard & Ramdas 2022, via the kernel), with its estimate."""
    lower, upper = quantile_cs(hist, p, alpha)
    return Interval(lower, upper, hist.quantile(p))


def _quantile_test(c: Criterion, ev: Evidence, alpha: float) -> _Test:
    p = c.spec.quantile
    assert p is not None
    s = ev.stats
    qc = quantile_interval(s.candidate.latency, p, alpha / 2)
    if c.max_ratio is not None:
        qb = quantile_interval(s.baseline.latency, p, alpha / 2)
        hi = qc.upper / qb.lower if qb.lower > 0 else INF
        lo = qc.lower / qb.upper if qb.upper > 0 else 0.0
        est = qc.estimate / qb.estimate if qb.estimate and qb.estimate == qb.estimate else NAN
        verdict = _decide_limit(Interval(lo, hi, est), maximum=c.max_ratio, minimum=None)
        return _Test(verdict, est, lo, hi, c.max_ratio, "ratio", qc.estimate, qb.estimate)
    qc = quantile_interval(s.candidate.latency, p, alpha)
    verdict = _decide_limit(qc, maximum=c.max, minimum=None)
    return _Test(verdict, qc.estimate, qc.lower, qc.upper, float(c.max or 0), "value", qc.estimate)


def _error_count_test(c: Criterion, ev: Evidence, alpha: float) -> _Test:
    e = ev.evalue
    assert e is not None and c.max_ratio is not None
    cand, base = ev.stats.candidate.pooled("error"), ev.stats.baseline.pooled("error")
    # Each side at α/2 (e-value ≥ 2/α against κ), as every other two-sided test here: at the
    # boundary both a PASS and a FAIL are errors, so together they stay ≤ α (Ville). The
    # interval shown is the CS of the same one-sided e-values; the bound a verdict rests on
    # is the threshold itself where the grid CS would reach past it, so a FAIL is never
    # printed with an interval that contains the threshold.
    lo, hi = e.one_sided_cs(alpha)
    if e.e_value >= 2 / alpha:
        verdict, lo = Verdict.FAIL, max(lo, c.max_ratio)
    elif e.pass_e_value(c.max_ratio) >= 2 / alpha:
        verdict, hi = Verdict.PASS, min(hi, c.max_ratio)
    else:
        verdict = Verdict.INCONCLUSIVE
    est = e.ratio_estimate
    return _Test(verdict, est, lo, hi, c.max_ratio, "ratio",
                 cand.mean if cand.n else NAN, base.mean if base.n else NAN)  # fmt: skip


def _drift_test(c: Criterion, ev: Evidence) -> _Test:
    s = ev.stats
    cv, bv = drift.align(s.candidate.drift, s.baseline.drift, drift_order)
    value = drift.psi(cv, bv) if c.metric == "psi" else drift.js_divergence(cv, bv)
    enough = cv.sum() >= drift.MIN_N and bv.sum() >= drift.MIN_N
    limit = float(c.max)  # type: ignore[arg-type]
    if not enough:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.FAIL if value > limit else Verdict.PASS
    return _Test(verdict, value, NAN, NAN, limit, "value", value)


def _floor_test(c: Criterion, ev: Evidence, alpha: float) -> _Test:
    """Agreement relative to the noise floor: paired d_i = a_c(i) − a_b(i) on the triples.

    a_c(i), a_b(i): the candidate's and a fresh baseline's agreement with production on
    request i (|difference| for regression). Higher agreement is better; lower |difference|.
    """
    key = c.spec.key + FLOOR
    pairs = ev.stats.pairs
    m = _pairs(ev.stats, key)
    margin = float(c.margin or 0.0)
    cand, base = pairs.side(key, "c"), pairs.side(key, "b")
    cv, bv = (cand.mean if cand.n else NAN), (base.mean if base.n else NAN)
    higher = c.higher_is_better
    h = -margin if higher else margin
    verdict, iv = _mean_test(m, h, alpha, key, _prior(ev.stats, key, 1.0, h), higher=higher)
    estimate = iv.estimate if m.n else NAN
    return _Test(verdict, estimate, iv.lower, iv.upper, -margin if higher else margin, "floor",
                 cv, bv)  # fmt: skip


def _agreement_test(c: Criterion, ev: Evidence, alpha: float) -> _Test:
    m = ev.stats.pairs.single.get(c.spec.key, Moments())
    # |difference| ≥ 0 has no known upper end, so no exact upper bound exists for its mean;
    # the score form takes the variance around the limit (all zeros: the limit², an
    # exponential's there), and the prior the same weighted as a few samples: an identical
    # candidate (0 on every request) PASSes a `max` after a few dozen pairs, and at the
    # limit both errors stay ≤ α for |differences| whose coefficient of variation is up to
    # ~1.5 (simulated: exponential, half-normal, gamma(0.5); tests/analysis/).
    limit = c.max if c.max is not None else c.min
    prior = float(limit) ** 2 if c.spec.key == "abs_diff" and limit is not None else 0.0
    verdict, iv = _limit(m, alpha, c.spec.key, prior, c.max, c.min)
    est = m.mean if m.n else NAN
    threshold = c.max if c.max is not None else c.min
    return _Test(verdict, est, iv.lower, iv.upper, float(threshold), "value", est)  # type: ignore[arg-type]


def _counts(c: Criterion, ev: Evidence) -> tuple[int, int]:
    s = ev.stats
    fam = c.spec.family
    if fam in ("error", "latency_mean", "latency_quantile", "drift"):
        return s.candidate.requests, s.baseline.requests
    if fam == "agreement" and c.margin is not None:
        n = s.pairs.paired(c.spec.key + FLOOR).n  # triples: production, shadow and baseline
        return n, n
    if fam == "agreement":
        return s.pairs.pairs, s.pairs.pairs
    if _is_paired(ev, c.spec.key) and fam != "resource":
        n = s.pairs.paired(c.spec.key).n
        if fam == "auc":
            n *= AUC_BATCH
        return n, n
    if fam == "auc":
        return s.candidate.labelled, s.baseline.labelled
    return s.candidate.n(c.spec.key), s.baseline.n(c.spec.key)


def _tests(c: Criterion, ev: Evidence, alpha: float) -> list[_Test]:
    fam = c.spec.family
    key = c.spec.key
    relative = c.margin is not None or c.max_ratio is not None
    limit = c.max is not None or c.min is not None
    if fam == "drift":
        return [_drift_test(c, ev)]
    if fam == "agreement":
        # margin (noise floor) and min/max (absolute) may be given together: α/2 each
        floor, absolute = c.margin is not None, c.min is not None or c.max is not None
        a = alpha / (int(floor) + int(absolute))
        return ([_floor_test(c, ev, a)] if floor else []) + (
            [_agreement_test(c, ev, a)] if absolute else []
        )
    if fam == "latency_quantile":
        return [_quantile_test(c, ev, alpha)]
    k = int(relative) + int(limit)
    a = alpha / max(k, 1)
    out = []
    if relative:
        if fam == "error" and c.max_ratio is not None and ev.mode == "canary" and ev.evalue:
            out.append(_error_count_test(c, ev, a))
        elif fam == "resource":
            out.append(_resource_test(c, ev, a))
        else:
            out.append(_mean_key_test(c, ev, key, a))
    if limit:
        out.append(_limit_test(c, ev, key, a))
    return out


def _combine(tests: list[_Test]) -> Verdict:
    if any(t.verdict is Verdict.FAIL for t in tests):
        return Verdict.FAIL
    if tests and all(t.verdict is Verdict.PASS for t in tests):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def judge(criterion: Criterion, evidence: Evidence, alpha: float) -> CriterionResult:
    """PASS, FAIL or INCONCLUSIVE for one criterion on one slice, with its one sentence."""
    from coalmine.analysis.sentence import sentence, tripwire_sentence

    c, ev = criterion, evidence
    n_c, n_b = _counts(c, ev)
    common: dict[str, Any] = {
        "name": c.name, "metric": c.metric, "slice": ev.slice, "n_candidate": n_c,
        "n_baseline": n_b, "critical": c.critical, "must": c.must, "alpha": alpha,
    }  # fmt: skip
    if c.error_classes:
        seen = {k: ev.stats.candidate.error_classes.get(k, 0) for k in c.error_classes}
        hits = {k: v for k, v in seen.items() if v}
        if hits or not (c.margin or c.max_ratio or c.max or c.min):
            verdict = Verdict.FAIL if hits else (Verdict.PASS if n_c else Verdict.INCONCLUSIVE)
            count = float(sum(hits.values()))
            return CriterionResult(
                verdict=verdict, estimate=count, lower=count, upper=count, threshold=0.0,
                sentence=tripwire_sentence(c, ev, hits, n_c), candidate_value=count, **common,
            )  # fmt: skip
    tests = _tests(c, ev, alpha)
    verdict = _combine(tests)
    # Report the failing test if any, else the first (the relative one when both exist).
    shown = next((t for t in tests if t.verdict is Verdict.FAIL), tests[0])
    return CriterionResult(
        verdict=verdict, estimate=shown.estimate, lower=shown.lower, upper=shown.upper,
        threshold=shown.threshold, candidate_value=shown.cand, baseline_value=shown.base,
        sentence=sentence(c, ev, verdict, shown.kind, shown.estimate, shown.lower, shown.upper,
                          shown.threshold, shown.cand, shown.base, alpha, n_c, n_b),
        **common,
    )  # fmt: skip
