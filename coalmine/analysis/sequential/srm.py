"""Sample-ratio mismatch: an anytime-valid test that requests reach the candidate at the
share the route says.

A rollout's comparison assumes the router sent each request to the candidate with the
configured probability π. A broken sticky key (every request hashed alike), a failover that
is not logged as such, or clients pinning a version break that, and then the candidate's
and production's samples are no longer comparable, whatever the criteria say.

Model: request i goes to the candidate with probability θ(ρ, π_i) = π_i ρ / (π_i ρ + 1 − π_i),
where π_i is the share it was routed under (logged with the request, so ramps and the
routing lag at a step change are conditioned on, not pooled) and ρ the odds ratio of the
real split to the configured one. H0: ρ ∈ [1/(1 + τ), 1 + τ], a tolerance around 1, because
requests are not independent units when a sticky key pins users: a few heavy users move the
request share a little without anything being broken.

E-value: a mixture over ρ outside the tolerance band (a fixed discrete prior on log ρ)
divided by the likelihood's maximum inside the band. For any true ρ0 in the band the
denominator is at least L(ρ0), so E ≤ ∫ L(ρ)/L(ρ0) dprior(ρ), a nonnegative martingale under
ρ0 with mean 1: P(ever E ≥ 1/α) ≤ α by Ville's inequality, however often one looks. The
log-likelihood is concave in log ρ, so its maximum over the band is the unconstrained
maximiser clipped to the band (found by bisection on the score, which is monotone).

State: candidate and other counts per distinct share (a handful per rollout), O(1) updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

__all__ = ["DEFAULT_TOLERANCE", "SampleRatioTest", "SrmSummary"]

DEFAULT_TOLERANCE = 0.4  # odds ratio band [0.71, 1.4]: 5% seen as 3.6–6.9% is not a mismatch
_GRID = np.linspace(-math.log(256.0), math.log(256.0), 257)  # log odds ratios of the prior


@dataclass(frozen=True, slots=True)
class SrmSummary:
    candidate: int
    total: int
    expected: float  # candidate requests expected under the configured shares
    e_value: float

    @property
    def observed_share(self) -> float:
        return self.candidate / self.total if self.total else math.nan

    @property
    def expected_share(self) -> float:
        return self.expected / self.total if self.total else math.nan


def _logsumexp(x: np.ndarray) -> float:
    # scipy's logsumexp costs ~0.5 ms a call in array-API checks; this runs at every look
    m = float(np.max(x))
    return m + math.log(float(np.sum(np.exp(x - m))))


class SampleRatioTest:
    """E-process against H0: the candidate's odds of a request are the configured odds
    within a factor 1 + `tolerance`."""

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE, prior_scale: float = 1.0) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance: must be ≥ 0 (got {tolerance!r})")
        if not prior_scale > 0:
            raise ValueError(f"prior_scale: must be > 0 (got {prior_scale!r})")
        self.tolerance = float(tolerance)
        self._band = math.log1p(self.tolerance)
        outside = np.abs(_GRID) > self._band
        # a normal prior on log ρ (sd `prior_scale`): mismatches of interest are a factor
        # 0.5–0.8 (a lost share) up to a broken split (ρ → 0 or ∞, the grid's ends)
        logw = -0.5 * (_GRID[outside] / prior_scale) ** 2
        self._z = _GRID[outside]
        self._log_prior = logw - _logsumexp(logw)
        self._counts: dict[float, list[int]] = {}  # logit(share) -> [candidate, other]

    def update(self, candidate: int, other: int, share: float) -> None:
        """Add requests routed while the candidate's configured share was `share`."""
        if candidate < 0 or other < 0:
            raise ValueError("candidate, other: must be ≥ 0")
        if not 0.0 < share < 1.0:
            raise ValueError(f"share: must be in (0, 1) (got {share!r})")
        if candidate == 0 and other == 0:
            return
        key = math.log(share) - math.log1p(-share)
        counts = self._counts.setdefault(key, [0, 0])
        counts[0] += int(candidate)
        counts[1] += int(other)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = np.fromiter(self._counts, dtype=np.float64)
        c = np.array([v[0] for v in self._counts.values()], dtype=np.float64)
        o = np.array([v[1] for v in self._counts.values()], dtype=np.float64)
        return logits, c, o

    @staticmethod
    def _loglik(z: np.ndarray, logits: np.ndarray, c: np.ndarray, o: np.ndarray) -> np.ndarray:
        """log L(ρ = e^z) for every z (rows) over the share groups (columns)."""
        eta = z[:, None] + logits[None, :]
        return np.asarray((c * log_expit(eta) + o * log_expit(-eta)).sum(axis=1))

    def _band_max(self, logits: np.ndarray, c: np.ndarray, o: np.ndarray) -> float:
        lo, hi = -self._band, self._band
        if logits.size == 1:  # one share: the maximiser is logit(observed) − logit(share)
            z = lo if c[0] == 0 else hi if o[0] == 0 else math.log(c[0] / o[0]) - logits[0]
        else:
            z = self._clipped_root(logits, c, o, lo, hi)
        z = min(max(z, lo), hi)
        return float(self._loglik(np.array([z]), logits, c, o)[0])

    @staticmethod
    def _clipped_root(
        logits: np.ndarray, c: np.ndarray, o: np.ndarray, lo: float, hi: float
    ) -> float:
        """The root of the score (decreasing in z) clipped to [lo, hi]: Newton steps kept
        inside a shrinking bracket, so it always converges."""

        def score(z: float) -> tuple[float, float]:
            p = expit(z + logits)
            return float((c * (1.0 - p) - o * p).sum()), float(((c + o) * p * (1 - p)).sum())

        if score(lo)[0] <= 0:
            return lo
        if score(hi)[0] >= 0:
            return hi
        z = 0.5 * (lo + hi)
        for _ in range(100):
            g, h = score(z)
            if g > 0:
                lo = z
            else:
                hi = z
            if hi - lo < 1e-12 or abs(g) < 1e-9:
                break
            step = z + g / h if h > 0 else 0.5 * (lo + hi)
            z = step if lo < step < hi else 0.5 * (lo + hi)
        return z

    @property
    def log_e_value(self) -> float:
        if not self._counts:
            return 0.0
        logits, c, o = self._arrays()
        mix = _logsumexp(self._log_prior + self._loglik(self._z, logits, c, o))
        return mix - self._band_max(logits, c, o)

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e_value, 700.0))

    def mismatch(self, alpha: float) -> bool:
        """True once the e-value reaches 1/α (a false alarm has probability ≤ α)."""
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        return self.log_e_value >= math.log(1.0 / alpha)

    def summary(self) -> SrmSummary:
        cand = sum(v[0] for v in self._counts.values())
        total = sum(v[0] + v[1] for v in self._counts.values())
        expected = sum((v[0] + v[1]) * float(expit(k)) for k, v in self._counts.items())
        return SrmSummary(cand, total, expected, self.e_value)
