"""Resource readings into window samples (pure): CPU per request, peak memory, restarts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import beta

from coalmine.analysis import Analysis, Criterion, Verdict
from coalmine.analysis.resources import ResourceWindows, resource_difference_cs
from coalmine.analysis.sequential import Moments

MB = 2**20


def test_a_window_closes_once_enough_requests_were_served() -> None:
    w = ResourceWindows(min_requests=20)
    assert w.observe("v2", 10.0, 100 * MB, 500) is None  # opens; earlier requests unknown
    assert w.observe("v2", 10.1, 120 * MB, 10) is None  # 10 < 20: the window stays open
    s = w.observe("v2", 10.3, 110 * MB, 15)
    assert s is not None
    assert s.cpu_ms_per_request == pytest.approx(300 / 25)  # 0.3 s of CPU for 25 requests
    assert s.memory_mb == pytest.approx(120)  # the peak over the window's readings
    # the next window starts at the closing reading
    s = w.observe("v2", 10.5, 90 * MB, 40)
    assert s is not None and s.cpu_ms_per_request == pytest.approx(5.0)
    assert s.memory_mb == pytest.approx(110)


def test_a_restarted_process_drops_the_open_window() -> None:
    w = ResourceWindows(min_requests=5)
    w.observe("v2", 50.0, 100 * MB, 0)
    assert w.observe("v2", 0.2, 40 * MB, 100) is None  # counter went backwards: reopen
    s = w.observe("v2", 0.4, 40 * MB, 10)
    assert s is not None and s.cpu_ms_per_request == pytest.approx(20.0)


def test_versions_have_their_own_windows_and_state_round_trips() -> None:
    w = ResourceWindows(min_requests=10)
    w.observe("v1", 1.0, 10 * MB, 0)
    w.observe("v2", 2.0, 20 * MB, 0)
    w.observe("v1", 1.1, 10 * MB, 5)
    again = ResourceWindows.from_state(json.loads(json.dumps(w.state_dict())))
    for windows in (w, again):
        s1 = windows.observe("v1", 1.2, 10 * MB, 5)
        assert s1 is not None and s1.cpu_ms_per_request == pytest.approx(20.0)
    assert again.observe("v2", 2.5, 20 * MB, 100) is not None


def test_cpu_per_request_compares_versions_with_different_shares() -> None:
    """5% canary vs 95% production, both 2 ms of CPU per request: CPU percent differs
    19-fold, CPU per request does not, so the guard rail passes; 3 ms per request fails."""
    for cost_c, verdict in ((2.0, Verdict.PASS), (3.0, Verdict.FAIL)):
        a = Analysis([Criterion(metric="cpu", max_ratio=1.25)], max_slices=0)
        w = ResourceWindows(min_requests=20)
        cpu = {"v1": 0.0, "v2": 0.0}
        for tick in range(400):
            for version, share, cost in (("v1", 0.95, 2.0), ("v2", 0.05, cost_c)):
                served = round(400 * share) + (tick % 3)  # 400 rps, one reading a second
                cpu[version] += served * cost / 1000 * (1 + 0.05 * ((tick * 7) % 5 - 2) / 2)
                s = w.observe(version, cpu[version], 80 * MB, served)
                if s is not None:
                    arm = "candidate" if version == "v2" else "baseline"
                    a.add_resources(arm, cpu=[s.cpu_ms_per_request], memory_mb=[s.memory_mb])
        r = next(r for r in a.judge(now=0).results if r.name == "cpu")
        assert r.verdict is verdict, r.sentence
        assert r.n_candidate > 100 and r.n_baseline > 100


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    e = rng.normal(0, sd * math.sqrt(1 - phi * phi), n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _moments(x: np.ndarray) -> tuple[Moments, Moments]:
    m, lag = Moments(), Moments()
    m.add(x)
    lag.add(x[1:] * x[:-1])
    return m, lag


def _run(rng: np.random.Generator, ratio: float, phi: float, alpha: float) -> str:
    """One rollout's looks: a baseline window at every look, a candidate window every
    third (a smaller share); 'fail', 'pass' or 'none' (never decided)."""
    base = 1.5 * (1 + _ar1(rng, 120, phi, 0.15))
    cand = 1.5 * ratio * (1 + _ar1(rng, 40, phi, 0.15))
    for t in range(3, 120):
        c, b = _moments(cand[: t // 3]), _moments(base[:t])
        iv = resource_difference_cs(c[0], c[1], b[0], b[1], 1.25, alpha)
        if iv.lower > 0:
            return "fail"
        if iv.upper < 0:
            return "pass"
    return "none"


def _upper(k: int, n: int, level: float = 0.95) -> float:
    return float(beta.ppf(level, k + 1, n - k))  # Clopper–Pearson upper bound


@pytest.mark.parametrize("phi", [0.0, 0.5])
def test_resource_cs_at_the_boundary_fails_and_passes_at_most_alpha(phi: float) -> None:
    """Candidate exactly κ = 1.25 times the baseline, autocorrelated windows, a look at
    every window: neither a false FAIL nor a PASS more often than α."""
    rng = np.random.default_rng(int(phi * 10) + 11)
    alpha, runs = 0.05, 300
    got = [_run(rng, 1.25, phi, alpha) for _ in range(runs)]
    assert _upper(got.count("fail"), runs) <= alpha, got.count("fail")
    assert _upper(got.count("pass"), runs) <= alpha, got.count("pass")


def test_resource_cs_catches_twice_the_cpu_and_needs_min_windows() -> None:
    rng = np.random.default_rng(5)
    got = [_run(rng, 2.0, 0.5, 0.05) for _ in range(100)]
    assert got.count("fail") >= 90
    few = _moments(np.array([9.0, 9.1, 9.0, 9.2]))
    many = _moments(np.array([1.0, 1.1, 1.0, 1.05, 0.95, 1.0]))
    iv = resource_difference_cs(few[0], few[1], many[0], many[1], 1.25, 0.05)
    assert iv.lower == -math.inf  # 4 < MIN_WINDOWS candidate windows: no decision yet


def test_cpu_that_reads_the_same_every_window_is_still_judged() -> None:
    """Identical windows: zero variance must not leave the CS open forever."""
    same, lag_same = _moments(np.full(12, 0.80))
    other, lag_other = _moments(np.full(12, 0.81))
    iv = resource_difference_cs(same, lag_same, other, lag_other, 1.25, 0.05)
    assert iv.upper < 0  # well within 1.25 × the baseline: PASS


@pytest.mark.parametrize(
    ("candidate_mb", "verdict"),
    [([80.0] * 8, Verdict.PASS), (list(np.linspace(80, 160, 8)), Verdict.FAIL)],
)
def test_memory_is_judged_on_peaks_once_each_version_has_min_windows(
    candidate_mb: list[float], verdict: Verdict
) -> None:
    """Memory reads the same to the page for minutes, or climbs (a leak): peaks, not means."""
    a = Analysis([Criterion(metric="memory")], max_slices=0)
    a.add_resources("baseline", memory_mb=[81.0] * 8)
    a.add_resources("candidate", memory_mb=candidate_mb[:4])
    r = next(r for r in a.judge(now=0).results if r.name == "memory")
    assert r.verdict is Verdict.INCONCLUSIVE  # 4 < MIN_WINDOWS candidate windows
    a.add_resources("candidate", memory_mb=candidate_mb[4:])
    r = next(r for r in a.judge(now=0).results if r.name == "memory")
    assert r.verdict is verdict, r.sentence
    assert r.estimate == pytest.approx(max(candidate_mb) / 81.0) and r.upper == r.estimate
    b = Analysis.from_state(json.loads(json.dumps(a.state_dict())))
    assert b.judge(now=0).to_dict() == a.judge(now=0).to_dict()


def test_latest_is_each_versions_newest_window_and_survives_a_restart() -> None:
    """What every judgement records for the dashboard's CPU and memory charts."""
    w = ResourceWindows(min_requests=10)
    assert w.latest() == {}
    w.observe("v1", 1.0, 100 * MB, 0)
    assert w.latest() == {}  # an open window is not a sample yet
    w.observe("v1", 1.1, 120 * MB, 20)
    w.observe("v1", 1.3, 110 * MB, 40)
    assert w.latest() == {"v1": {"windows": 2, "cpu_ms_per_request": pytest.approx(5.0),
                                 "memory_mb": pytest.approx(120.0)}}  # fmt: skip
    again = ResourceWindows.from_state(json.loads(json.dumps(w.state_dict())))
    assert again.latest() == w.latest()
