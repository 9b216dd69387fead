"""Unit tests of the kernel's building blocks with literal inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from coalmine.analysis.sequential import (
    Interval,
    Moments,
    Verdict,
    decide_higher_better,
    decide_lower_better,
    default_rho,
    mean_difference_cs,
    mixture_radius,
    paired_mean_cs,
    stratified_difference_cs,
)


def test_moments_mean_variance_merge_and_roundtrip() -> None:
    data = np.array([1.0, 2.0, 4.0, 7.0])
    m = Moments()
    m.add(data[:2])
    m.add_one(4.0)
    m.add([7.0])
    assert m.n == 4
    assert m.mean == pytest.approx(data.mean())
    assert m.variance == pytest.approx(data.var(ddof=1))
    merged = Moments().merge(m).merge(Moments(1, 3.0, 9.0))
    assert merged.n == 5 and merged.total == pytest.approx(17.0)
    assert m.n == 4  # merge does not mutate
    again = Moments.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    assert Moments(1, 5.0, 25.0).variance == 0.0


def test_moments_rejects_non_finite() -> None:
    m = Moments()
    with pytest.raises(ValueError, match="finite"):
        m.add([1.0, float("nan")])
    with pytest.raises(ValueError, match="finite"):
        m.add_one(math.inf)
    assert m.n == 0  # nothing half-added


def test_two_sided_radius_matches_closed_form() -> None:
    info, alpha = 46_230.0, 0.05
    rho = default_rho(info, alpha)
    expected = math.sqrt((info + rho) * math.log((info + rho) / (rho * alpha**2))) / info
    assert mixture_radius(info, alpha, rho) == pytest.approx(expected, rel=1e-12)
    assert mixture_radius(0.0, alpha, rho) == math.inf


def test_one_sided_radius_solves_half_normal_mixture() -> None:
    # Numerically integrate the half-normal mixture at the boundary: it must equal 1/α.
    info, alpha, rho = 2_000.0, 0.05, 300.0
    r = mixture_radius(info, alpha, rho, one_sided=True)
    s = r * info

    def integrand(lam: float) -> float:
        return float(
            math.exp(lam * s - lam * lam * info / 2) * 2 * stats.norm.pdf(lam, scale=rho**-0.5)
        )

    value, _ = integrate.quad(integrand, 0, 50 / math.sqrt(rho))
    assert value == pytest.approx(1 / alpha, rel=1e-6)
    assert r < mixture_radius(info, alpha, rho)  # one-sided is tighter


def test_radius_shrinks_and_rejects_bad_input() -> None:
    rho = 100.0
    radii = [mixture_radius(i, 0.05, rho) for i in (10.0, 100.0, 1e4, 1e6)]
    assert radii == sorted(radii, reverse=True)
    with pytest.raises(ValueError, match="alpha"):
        mixture_radius(1.0, 1.5, rho)
    with pytest.raises(ValueError, match="rho"):
        mixture_radius(1.0, 0.05, -1.0)
    with pytest.raises(ValueError, match="information"):
        mixture_radius(-1.0, 0.05, rho)


def test_mean_difference_cs_unbounded_without_data() -> None:
    c, b = Moments(), Moments()
    c.add([1.0])
    b.add([0.0, 1.0, 1.0])
    iv = mean_difference_cs(c, b, 0.05)
    assert iv.lower == -math.inf and iv.upper == math.inf
    c.add([1.0])
    b2 = Moments()
    b2.add([1.0, 1.0])
    iv = mean_difference_cs(c, b2, 0.05)  # zero variance on both sides: no information
    assert not iv.bounded


def test_mean_difference_cs_sides_and_estimate() -> None:
    rng = np.random.default_rng(1)
    c, b = Moments(), Moments()
    c.add(rng.normal(1.0, 1.0, 500))
    b.add(rng.normal(0.0, 1.0, 500))
    two = mean_difference_cs(c, b, 0.05)
    lower = mean_difference_cs(c, b, 0.05, sides="lower")
    upper = mean_difference_cs(c, b, 0.05, sides="upper")
    assert two.estimate == pytest.approx(c.mean - b.mean)
    assert two.lower < two.estimate < two.upper
    assert lower.upper == math.inf and lower.lower > two.lower
    assert upper.lower == -math.inf and upper.upper < two.upper
    assert two.lower > 0.5  # a 1-sd difference on 500 per arm is clear
    with pytest.raises(ValueError, match="sides"):
        mean_difference_cs(c, b, 0.05, sides="both")  # type: ignore[arg-type]


def test_stratified_equals_plain_for_one_stratum_and_skips_empty() -> None:
    rng = np.random.default_rng(2)
    c, b = Moments(), Moments()
    c.add(rng.normal(0.2, 1.0, 300))
    b.add(rng.normal(0.0, 1.0, 900))
    plain = mean_difference_cs(c, b, 0.05, rho=50.0)
    strat = stratified_difference_cs([(c, b), (Moments(), Moments(1, 1.0, 1.0))], 0.05, rho=50.0)
    assert strat.lower == pytest.approx(plain.lower)
    assert strat.upper == pytest.approx(plain.upper)
    assert not stratified_difference_cs([], 0.05).bounded


def test_paired_mean_cs() -> None:
    d = Moments()
    d.add([0.0] * 90 + [-1.0] * 8 + [1.0] * 2)
    iv = paired_mean_cs(d, 0.05)
    assert iv.estimate == pytest.approx(-0.06)
    assert iv.lower < -0.06 < iv.upper
    assert not paired_mean_cs(Moments(1, 1.0, 1.0), 0.05).bounded


@pytest.mark.parametrize(
    ("interval", "margin", "higher", "lower"),
    [
        (Interval(-0.005, 0.01, 0.0), 0.01, Verdict.PASS, Verdict.INCONCLUSIVE),
        (Interval(-0.05, -0.02, -0.03), 0.01, Verdict.FAIL, Verdict.PASS),
        (Interval(-0.02, 0.0, -0.01), 0.01, Verdict.INCONCLUSIVE, Verdict.PASS),
        (Interval(0.02, 0.05, 0.03), 0.01, Verdict.PASS, Verdict.FAIL),
        (Interval(-math.inf, math.inf, 0.0), 0.01, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE),
    ],
)
def test_decision_rules(interval: Interval, margin: float, higher: Verdict, lower: Verdict) -> None:
    assert decide_higher_better(interval, margin) is higher
    assert decide_lower_better(interval, margin) is lower


def test_interval_roundtrip_with_infinities() -> None:
    iv = Interval(-math.inf, 0.3, 0.1)
    assert Interval.from_dict(json.loads(json.dumps(iv.to_dict()))) == iv


def test_public_api_is_what_the_engine_codes_against() -> None:
    import inspect

    import coalmine.analysis.sequential as seq

    brief = {
        "Moments", "Interval", "Verdict", "mixture_radius", "default_rho", "mean_difference_cs",
        "stratified_difference_cs", "paired_mean_cs", "bernstein_cs", "BernsteinState",
        "ErrorCountEValue", "LogHistogram", "quantile_cs", "quantile_ratio_verdict",
        "decide_higher_better", "decide_lower_better", "e_to_p", "holm", "bonferroni_alpha",
        "e_bh", "psi", "jensen_shannon", "fixed_horizon_sample_size", "anytime_sample_size",
    }  # fmt: skip
    assert brief <= set(seq.__all__)
    assert all(hasattr(seq, name) for name in seq.__all__)
    params = inspect.signature(seq.mean_difference_cs).parameters
    assert list(params) == ["candidate", "baseline", "alpha", "rho", "sides"]
    assert params["sides"].default == "two" and params["rho"].kind is params["rho"].KEYWORD_ONLY
    assert list(inspect.signature(seq.ErrorCountEValue).parameters) == ["kappa", "a", "b"]
    assert Verdict.PASS == "PASS" and Verdict("INCONCLUSIVE") is Verdict.INCONCLUSIVE
