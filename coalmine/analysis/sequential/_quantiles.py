"""Latency quantiles: a fixed log-binned histogram and the Howard & Ramdas quantile CS.

Howard & Ramdas (2022, Bernoulli, arXiv:1906.09712): uniformly over time, the empirical CDF at
the true p-quantile stays within f_t of p, f_t = 1.5√(p(1−p)ℓ_t) + 0.8ℓ_t,
ℓ_t = (1.4 log log(2.1t) + log(10/α))/t. So the p-quantile lies in
[X_(⌈t(p − f_t)⌉), X_(⌊t(p + f_t)⌋ + 1)] at every t with probability ≥ 1 − α; the upper order
statistic does not exist (bound = inf) until t(p + f_t) < t, about 3,000 samples for p = 0.99
at α = 0.05. Order statistics come from fixed log-spaced bins, rounded outward (lower edge for
a lower bound, upper edge for an upper bound), so binning never makes the CS narrower; unlike
a t-digest, the error is deterministic and histograms merge exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from coalmine.analysis.sequential._decision import Verdict

DEFAULT_LOW = 1e-3  # ms
DEFAULT_HIGH = 1e5  # ms
DEFAULT_BINS_PER_DECADE = 100  # ~2.3% relative bin width


@functools.lru_cache(maxsize=16)
def _edges(low: float, high: float, bins_per_decade: int) -> NDArray[np.float64]:
    """Bin edges, computed once per shape and shared read-only (one histogram per slice)."""
    n_inner = math.ceil(round(math.log10(high / low) * bins_per_decade, 9))
    inner = low * 10.0 ** (np.arange(n_inner + 1) / bins_per_decade)
    inner[-1] = high
    # edges[k], edges[k+1] bound bin k; bin 0 is the underflow, the last bin the overflow.
    edges = np.concatenate(([0.0], inner, [math.inf]))
    edges.flags.writeable = False
    return edges


class LogHistogram:
    """Counts in log-spaced bins over [low, high), plus an underflow [0, low) and an
    overflow [high, inf) bin. Negative values are rejected (latencies, sizes, losses)."""

    def __init__(
        self,
        low: float = DEFAULT_LOW,
        high: float = DEFAULT_HIGH,
        bins_per_decade: int = DEFAULT_BINS_PER_DECADE,
    ) -> None:
        if not (0 < low < high) or bins_per_decade < 1:
            raise ValueError("low, high, bins_per_decade: need 0 < low < high and ≥ 1 bin/decade")
        self.low = float(low)
        self.high = float(high)
        self.bins_per_decade = int(bins_per_decade)
        self.edges: NDArray[np.float64] = _edges(self.low, self.high, self.bins_per_decade)
        self.counts: NDArray[np.int64] = np.zeros(self.edges.size - 1, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, values: ArrayLike) -> None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        if np.any(np.isnan(x)) or np.any(x < 0):
            raise ValueError("values: must be ≥ 0 and not NaN")
        idx = np.searchsorted(self.edges, x, side="right") - 1
        np.add.at(self.counts, np.minimum(idx, self.counts.size - 1), 1)

    def _check_compatible(self, other: LogHistogram) -> None:
        if (self.low, self.high, self.bins_per_decade) != (
            other.low,
            other.high,
            other.bins_per_decade,
        ):
            raise ValueError("histograms: bin layouts differ, cannot merge")

    def merge(self, other: LogHistogram) -> LogHistogram:
        """A new histogram holding both (neither operand is modified)."""
        self._check_compatible(other)
        out = LogHistogram(self.low, self.high, self.bins_per_decade)
        out.counts = self.counts + other.counts
        return out

    def order_statistic_bin(self, k: int) -> int:
        """Index of the bin holding the k-th smallest value (1-based)."""
        if not 1 <= k <= self.n:
            raise ValueError(f"k: must be in 1..{self.n} (got {k})")
        return int(np.searchsorted(np.cumsum(self.counts), k, side="left"))

    def quantile(self, p: float) -> float:
        """Point estimate of the p-quantile: geometric middle of the bin of X_(⌈pn⌉)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: must be in [0, 1] (got {p!r})")
        if self.n == 0:
            return math.nan
        b = self.order_statistic_bin(max(1, math.ceil(p * self.n)))
        lo, hi = self.edges[b], self.edges[b + 1]
        if lo == 0.0:
            return float(hi) / 2.0
        if math.isinf(hi):
            return float(lo)
        return float(math.sqrt(lo * hi))

    def to_dict(self) -> dict[str, Any]:
        nz = np.nonzero(self.counts)[0]
        return {
            "low": self.low,
            "high": self.high,
            "bins_per_decade": self.bins_per_decade,
            "counts": {str(int(i)): int(self.counts[i]) for i in nz},  # sparse
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogHistogram:
        h = cls(float(data["low"]), float(data["high"]), int(data["bins_per_decade"]))
        for key, count in data["counts"].items():
            i = int(key)
            if not 0 <= i < h.counts.size or int(count) < 0:
                raise ValueError(f"counts[{key}]: bin index or count out of range")
            h.counts[i] = int(count)
        return h


def quantile_cs_radius(t: int, p: float, alpha: float) -> float:
    """f_t of Howard & Ramdas (2022): the time-uniform deviation of the ECDF at the quantile."""
    if t < 1:
        return math.inf
    ell = (1.4 * math.log(math.log(2.1 * t)) + math.log(10.0 / alpha)) / t
    return 1.5 * math.sqrt(p * (1.0 - p) * ell) + 0.8 * ell


def quantile_min_samples(p: float, alpha: float) -> int:
    """The fewest samples at which the p-quantile CS has a finite upper bound (p + f_t < 1).

    Planning: before this many samples a quantile criterion can neither PASS nor FAIL a
    ratio against another arm (≈ 300 for p = 0.5, thousands for p = 0.95 and 0.99).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: must be in (0, 1) (got {p!r})")
    lo, hi = 1, 2
    while p + quantile_cs_radius(hi, p, alpha) >= 1.0:
        lo, hi = hi, hi * 2
    while lo < hi:  # f_t decreases in t: bisect for the first t that fits
        mid = (lo + hi) // 2
        if p + quantile_cs_radius(mid, p, alpha) < 1.0:
            hi = mid
        else:
            lo = mid + 1
    return lo


def quantile_cs(hist: LogHistogram, p: float, alpha: float) -> tuple[float, float]:
    """Anytime-valid CS for the p-quantile; (0, inf) with no data, upper = inf until
    t(p + f_t) < t."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: must be in (0, 1) (got {p!r})")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
    t = hist.n
    if t == 0:
        return 0.0, math.inf
    f = quantile_cs_radius(t, p, alpha)
    k_lo = math.ceil(t * (p - f) - 1e-9)
    lower = 0.0 if k_lo < 1 else float(hist.edges[hist.order_statistic_bin(k_lo)])
    k_hi = math.floor(t * (p + f) + 1e-9) + 1
    upper = math.inf if k_hi > t else float(hist.edges[hist.order_statistic_bin(k_hi) + 1])
    return lower, upper


def quantile_ratio_verdict(
    candidate: LogHistogram,
    baseline: LogHistogram,
    p: float,
    max_ratio: float,
    alpha: float,
) -> Verdict:
    """Is the candidate's p-quantile within `max_ratio` × production's?

    Each arm's CS at α/2. FAIL when cand lower > base upper × ratio (the candidate's
    quantile is certainly above the limit); PASS when cand upper < base lower × ratio.
    PASS is impossible while the candidate's upper bound is still infinite.
    """
    if not max_ratio > 0:
        raise ValueError(f"max_ratio: must be > 0 (got {max_ratio!r})")
    c_lo, c_hi = quantile_cs(candidate, p, alpha / 2.0)
    b_lo, b_hi = quantile_cs(baseline, p, alpha / 2.0)
    if c_lo > b_hi * max_ratio:
        return Verdict.FAIL
    if c_hi < b_lo * max_ratio:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE
