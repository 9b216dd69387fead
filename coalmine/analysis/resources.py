"""Resource readings → samples for the `cpu` and `memory` criteria (pure).

Readings (analysis/sources/resources.py) are few — one per version per evaluation — and
strongly autocorrelated: a process's CPU counter and its memory only move a little between
two readings. So they are not samples themselves. The rule:

- a WINDOW of a version runs from one reading to the first later reading by which the
  version has served at least `min_requests` requests (counted in the prediction log). A
  version is read only when its window is due (`due`): a scrape costs the scraped server
  about a millisecond of CPU, so reading a 5% canary at every evaluation would add that
  to each of its few requests (measured on serve-model: +20% per request at 7 requests a
  reading); one reading per window adds it once per `min_requests` requests;
- its `cpu` sample is the CPU time the version's processes used in the window per request
  served, in milliseconds: versions with different traffic shares (a 5% canary against
  production's 95%) compare, where CPU percent would not;
- its `memory` sample is the larger resident memory (MB) of the window's two readings: a
  leak shows as windows that keep growing.

`memory` is judged on peaks, not means: a leak is a trend, which a mean over windows
(autocorrelated by construction) would judge slowly and loosely. Once each version has
`MIN_WINDOWS` windows, the candidate's peak resident memory is compared with κ × the
baseline's peak (or the baseline's peak + margin): above it FAILs at once, at or below it
PASSes for now (a peak is measured, not estimated: no α is spent, like drift). The estimate
and both bounds are the peak ratio, so a step's power floor reads it directly.

`cpu`: windows of one version are disjoint, but not independent (a busy host slows several in a
row; memory drifts). The criteria (default `max_ratio: 1.25`) compare the mean of the
candidate's windows with κ × the baseline's by a normal-mixture confidence sequence for
m_c − κ·m_b (`resource_difference_cs`) that:
- decides nothing before each arm has `MIN_WINDOWS` windows;
- inflates each arm's variance by (1 + φ)/(1 − φ), the variance of a mean of an AR(1)
  series, with φ its windows' lag-1 autocorrelation, bias-corrected for short series
  (+ (1 + 4φ̂)/n) and kept within [0.5, 0.95]: assumed at least moderate, never ignored;
- floors each arm's standard deviation at 1% of its mean (memory may read the same for
  minutes: a zero variance would leave the confidence sequence undefined);
- is tuned (ρ) for decisions around `DESIGN_WINDOWS` windows, not thousands of requests.
Simulated at the boundary (candidate exactly κ times the baseline, AR(1) windows, a look at
every window; α/3 = 0.0167): false FAIL 0.0% (φ = 0), 0.5% (φ = 0.5), 4.8–6.8% (φ = 0.8),
19% (φ = 0.9); a candidate as good as production: ≤ 1.2% even at φ = 0.9; twice the CPU per
request: FAIL in 85–98% of runs after a median 5–7 windows. So these are guard rails for
regressions of tens of percent and more, not fine comparisons.
A process restart (the CPU counter goes backwards) drops the open window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from coalmine.analysis.sequential import Interval, Moments, Verdict
from coalmine.analysis.sequential._mixture import (
    default_rho,
    mean_difference_cs,
    two_sample_variance,
)

__all__ = [
    "DESIGN_WINDOWS",
    "MIN_REQUESTS",
    "MIN_WINDOWS",
    "ResourceWindows",
    "WindowSample",
    "peak_memory_verdict",
    "resource_difference_cs",
]

MIN_REQUESTS = 20  # requests per window: fewer makes CPU-per-request mostly noise
MIN_WINDOWS = 5  # per arm, before a resource criterion can decide
DESIGN_WINDOWS = 20.0  # the mixture is tightest around this many (effective) windows
PHI_MIN, PHI_MAX = 0.5, 0.95
# Each arm's standard deviation is at least this share of its mean: memory often reads the
# same to the page for minutes, and a zero variance would leave the CS undefined for good.
REL_SD_FLOOR = 0.01


@dataclass(slots=True)
class _Open:
    cpu_seconds: float  # the counter at the window's start
    peak_bytes: float
    requests: int = 0


@dataclass(frozen=True, slots=True)
class WindowSample:
    cpu_ms_per_request: float
    memory_mb: float
    # products with the version's previous window (None for its first): the lag-1 moments
    cpu_lag: float | None = None
    memory_lag: float | None = None


class ResourceWindows:
    """Per version, the open window; `observe` closes windows into samples."""

    def __init__(self, min_requests: int = MIN_REQUESTS) -> None:
        if min_requests < 1:
            raise ValueError("min_requests: must be ≥ 1")
        self.min_requests = min_requests
        self._open: dict[str, _Open] = {}
        self._last: dict[str, tuple[float, float]] = {}  # the previous window's sample
        self._closed: dict[str, int] = {}  # windows closed per version (the charts' points)

    def add_requests(self, version: str, requests: int) -> None:
        """Requests `version` served since the last call (before its first reading: ignored)."""
        w = self._open.get(version)
        if w is not None:
            w.requests += max(requests, 0)

    def due(self, version: str) -> bool:
        """Whether a reading of `version` now would open or close a window."""
        w = self._open.get(version)
        return w is None or w.requests >= self.min_requests

    def observe(
        self, version: str, cpu_seconds: float, memory_bytes: float, requests: int = 0
    ) -> WindowSample | None:
        """A new reading of `version`, which served `requests` since its previous reading.

        The first reading only opens a window (what was served before it is unknown)."""
        w = self._open.get(version)
        if w is None or cpu_seconds < w.cpu_seconds:  # first reading, or a restarted process
            self._open[version] = _Open(cpu_seconds, memory_bytes)
            return None
        w.requests += max(requests, 0)
        w.peak_bytes = max(w.peak_bytes, memory_bytes)
        if w.requests < self.min_requests:
            return None
        cpu = 1000.0 * (cpu_seconds - w.cpu_seconds) / w.requests
        memory = w.peak_bytes / 2**20
        last = self._last.get(version)
        self._last[version] = (cpu, memory)
        self._closed[version] = self._closed.get(version, 0) + 1
        self._open[version] = _Open(cpu_seconds, memory_bytes)
        if last is None:
            return WindowSample(cpu, memory)
        return WindowSample(cpu, memory, cpu * last[0], memory * last[1])

    def latest(self) -> dict[str, dict[str, float]]:
        """Per version, its newest window: how many it has closed, CPU ms per request, and
        peak MB. Recorded with every judgement, so a dashboard draws each version's
        resources over time from the judgements alone."""
        return {v: {"windows": self._closed.get(v, 0), "cpu_ms_per_request": cpu,
                    "memory_mb": memory} for v, (cpu, memory) in self._last.items()}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"min_requests": self.min_requests,
                "open": {v: asdict(w) for v, w in self._open.items()},
                "last": {v: list(x) for v, x in self._last.items()},
                "closed": dict(self._closed)}  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ResourceWindows:
        out = cls(int(state["min_requests"]))
        out._open = {v: _Open(**w) for v, w in state["open"].items()}
        out._last = {v: (float(x[0]), float(x[1])) for v, x in state.get("last", {}).items()}
        out._closed = {v: int(n) for v, n in state.get("closed", {}).items()}
        return out


def _inflated(m: Moments, lag: Moments) -> Moments:
    """`m` with its variance multiplied by (1 + φ)/(1 − φ), φ its lag-1 autocorrelation
    (bias-corrected, within [PHI_MIN, PHI_MAX]), and at least (REL_SD_FLOOR × mean)²;
    same n and mean."""
    n = m.n
    mean = m.mean
    centred = max(m.total_sq - m.total * mean, 0.0)
    phi = 0.0
    if lag.n >= 2 and centred > 0:
        phi = (lag.mean - mean * mean) / (centred / n)
    phi = min(max(phi + (1 + 4 * max(phi, 0.0)) / n, PHI_MIN), PHI_MAX)
    factor = (1 + phi) / (1 - phi)
    centred = max(factor * centred, (n - 1) * (REL_SD_FLOOR * mean) ** 2)
    return Moments(n, m.total, centred + m.total * mean)


def resource_difference_cs(
    candidate: Moments,
    candidate_lag: Moments,
    baseline: Moments,
    baseline_lag: Moments,
    kappa: float,
    alpha: float,
) -> Interval:
    """CS for m_c − κ·m_b from window samples (and their lag-1 product moments)."""
    estimate = candidate.mean - kappa * baseline.mean if candidate.n and baseline.n else math.nan
    if candidate.n < MIN_WINDOWS or baseline.n < MIN_WINDOWS:
        return Interval(-math.inf, math.inf, estimate)
    c = _inflated(candidate, candidate_lag)
    b = _inflated(baseline, baseline_lag)
    b = Moments(b.n, kappa * b.total, kappa * kappa * b.total_sq)
    var = float(two_sample_variance(c.variance, c.n, b.variance, b.n))
    if not var > 0:
        return Interval(-math.inf, math.inf, estimate)
    effective_n = 1.0 / (1.0 / c.n + 1.0 / b.n)
    rho = default_rho(DESIGN_WINDOWS / (var * effective_n), alpha)
    return mean_difference_cs(c, b, alpha, rho=rho)


def peak_memory_verdict(
    candidate_peak: float, n_candidate: int, baseline_peak: float, n_baseline: int,
    *, max_ratio: float | None, margin: float | None,
) -> Verdict:  # fmt: skip
    """`memory`: the candidate's peak against κ × (or margin above) the baseline's peak."""
    if min(n_candidate, n_baseline) < MIN_WINDOWS:
        return Verdict.INCONCLUSIVE
    over = baseline_peak + (margin or 0.0)
    limit = over if max_ratio is None else max_ratio * baseline_peak
    return Verdict.FAIL if candidate_peak > limit else Verdict.PASS
