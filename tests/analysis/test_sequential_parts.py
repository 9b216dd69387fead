"""Unit tests of the count e-value, quantile CS, Bernstein CS, multiplicity, drift, planning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import betaln
from scipy.stats import beta

from coalmine.analysis.sequential import (
    BernsteinState,
    ErrorCountEValue,
    LogHistogram,
    Verdict,
    anytime_sample_size,
    bernstein_cs,
    bonferroni_alpha,
    e_bh,
    e_to_p,
    fixed_horizon_sample_size,
    holm,
    jensen_shannon,
    psi,
    psi_level,
    quantile_cs,
    quantile_cs_radius,
    quantile_ratio_verdict,
)


def test_count_evalue_matches_beta_binomial_at_constant_half_share() -> None:
    # With π = ½ and κ = 1, θ(ρ) = q: the grid mixture approximates the Beta-binomial
    # e-value truncated to q > ½ (uniform prior): E = 2·∫_{½}^{1} q^x (1−q)^y dq / (½)^{x+y}.
    e = ErrorCountEValue()
    e.update(30, 12, 0.5)
    x, y = 30, 12

    full = math.exp(betaln(1 + x, 1 + y) + (x + y) * math.log(2.0))
    truncated = full * beta.sf(0.5, 1 + x, 1 + y) * 2.0
    assert e.e_value == pytest.approx(truncated, rel=0.02)
    assert e.e_value > 10  # 30 vs 12 at an even split is strong evidence


def test_count_evalue_state_roundtrip_and_validation() -> None:
    e = ErrorCountEValue(kappa=1.5)
    e.update(4, 40, 0.05)
    e.update(3, 10, 0.25)
    again = ErrorCountEValue.from_dict(json.loads(json.dumps(e.to_dict())))
    assert again.e_value == pytest.approx(e.e_value)
    assert again.candidate_errors == 7 and again.baseline_errors == 50
    with pytest.raises(ValueError, match="candidate_share"):
        e.update(1, 1, 1.0)
    with pytest.raises(ValueError, match="kappa"):
        ErrorCountEValue(kappa=0)
    assert math.isnan(ErrorCountEValue().ratio_estimate)


def test_count_ratio_estimate_and_cs() -> None:
    rng = np.random.default_rng(5)
    e = ErrorCountEValue()
    for share in (0.05, 0.25, 0.5):
        n = 40_000
        c = rng.binomial(int(n * share), 0.015)
        p = rng.binomial(int(n * (1 - share)), 0.005)
        e.update(int(c), int(p), share)
    lo, hi = e.ratio_cs(0.05)
    assert lo < 3.0 < hi
    assert lo > 1.5
    assert 2.0 < e.ratio_estimate < 4.5
    assert e.e_value > 1e3
    assert e.pass_e_value(1.0) < 1.0  # no evidence that the candidate is better


def test_log_histogram_quantiles_and_merge() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(3.0, 0.5, 20_000)
    h = LogHistogram()
    h.add(x[:10_000])
    h2 = LogHistogram()
    h2.add(x[10_000:])
    m = h.merge(h2)
    assert m.n == 20_000
    assert m.quantile(0.5) == pytest.approx(np.quantile(x, 0.5), rel=0.03)
    lo, hi = quantile_cs(m, 0.99, 0.05)
    true_q = math.exp(3.0 + 0.5 * 2.3263)
    assert lo <= true_q <= hi
    again = LogHistogram.from_dict(json.loads(json.dumps(m.to_dict())))
    assert np.array_equal(again.counts, m.counts)
    with pytest.raises(ValueError, match="values"):
        h.add([-1.0])
    with pytest.raises(ValueError, match="layouts"):
        h.merge(LogHistogram(bins_per_decade=10))
    h.add([1e9, 1e-6])  # overflow and underflow bins
    assert h.n == 10_002


def test_quantile_cs_bounds_round_outward() -> None:
    h = LogHistogram(bins_per_decade=10)
    h.add(np.full(5_000, 10.0))
    lo, hi = quantile_cs(h, 0.5, 0.05)
    assert lo <= 10.0 <= hi
    assert hi / lo < 1.3  # one bin wide


def test_p99_upper_bound_infinite_until_about_3000_samples() -> None:
    alpha, p = 0.05, 0.99
    first_finite = next(
        t for t in range(100, 10_000) if t * (p + quantile_cs_radius(t, p, alpha)) < t - 1
    )
    assert 2_700 < first_finite < 3_300
    h = LogHistogram()
    h.add(np.random.default_rng(0).lognormal(3.0, 0.5, 2_500))
    assert quantile_cs(h, p, alpha)[1] == math.inf


def test_quantile_ratio_verdict_validation() -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        quantile_ratio_verdict(LogHistogram(), LogHistogram(), 0.99, 0.0, 0.05)
    assert quantile_ratio_verdict(LogHistogram(), LogHistogram(), 0.99, 1.2, 0.05) is (
        Verdict.INCONCLUSIVE
    )


def test_bernstein_interval_and_difference() -> None:
    rng = np.random.default_rng(4)
    c, b = BernsteinState(), BernsteinState()
    for _ in range(20):
        c.update(rng.random(200) < 0.8)
        b.update(rng.random(200) < 0.9)
    ic = c.interval(0.05)
    assert ic.lower < 0.8 < ic.upper and ic.upper - ic.lower < 0.1
    d = bernstein_cs(c, b, 0.05)
    assert d.lower < -0.1 < d.upper and d.upper < 0
    assert bernstein_cs(c, b, 0.05, sides="upper").upper < d.upper
    again = BernsteinState.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again.interval(0.05) == ic
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        c.update([1.5])
    assert BernsteinState().interval(0.05).lower == 0.0


def test_multiplicity() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5], 0.05) == [True, False, False, False]
    assert holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]
    assert bonferroni_alpha(0.05, 20) == pytest.approx(0.0025)
    assert e_to_p(0.5) == 1.0 and e_to_p(40.0) == pytest.approx(0.025)
    assert e_bh([100.0, 1.0, 50.0, 2.0], 0.1) == [True, False, True, False]
    assert e_bh([], 0.05) == []
    with pytest.raises(ValueError, match="k"):
        bonferroni_alpha(0.05, 0)


def test_drift_measures() -> None:
    base = np.array([100, 200, 400, 200, 100])
    same = base * 3
    shifted = np.array([20, 80, 250, 350, 300])
    assert psi(base, same) == pytest.approx(0.0, abs=1e-3)
    assert psi(base, shifted) > 0.2 and psi_level(psi(base, shifted)) == "significant"
    assert jensen_shannon(base, shifted) > 0.05
    assert jensen_shannon(base, base) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= jensen_shannon([10, 0], [0, 10]) <= 1.0
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])


def test_planning_matches_reference_figures() -> None:
    vc, vp = 0.88 * 0.12, 0.9 * 0.1
    # STATISTICS.md: a fixed-horizon test for 0.90 → 0.88 at 5% share, 80% power: 1,706.
    assert fixed_horizon_sample_size(0.02, vc, vp, 0.05, power=0.8) == 1_706
    n90 = anytime_sample_size(0.02, vc, vp, 0.05, power=0.9)
    n90_one = anytime_sample_size(0.02, vc, vp, 0.05, power=0.9, sides="one")
    assert 4_500 < n90 < 5_600  # reference: two-sided 90% by ~5,100
    assert 4_000 < n90_one < n90  # one-sided: ~4,500
    # paired shadow needs far fewer (Var(d) = 0.06 − 0.02²)
    assert anytime_sample_size(0.02, 0.0596, 0.0, 0.05, power=0.9) < n90 / 1.5
    with pytest.raises(ValueError, match="effect"):
        anytime_sample_size(0.0, vc, vp, 0.05)
