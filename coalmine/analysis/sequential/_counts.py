"""Sequential test on error counts under an unbalanced, ramping split.

Lindon & Malek (2022, arXiv:2011.03567); Lindon, Sanden & Shirikian (KDD 2022,
arXiv:2205.14762). Condition on each error event: if the candidate's error rate is ρ times
production's and the candidate receives a share π of traffic at that moment, the event came
from the candidate with probability θ(ρ, π) = πρ/(πρ + 1 − π). Under H0: ρ ≤ κ the likelihood
ratio of any fixed alternative ρ' > κ against κ is a nonnegative supermartingale (each factor
has mean ≤ 1 when the true θ ≤ θ(κ)), so a mixture over ρ' > κ is an e-process and
P(ever E ≥ 1/α) ≤ α. Because θ is recomputed with the share at the time of each event, this
stays valid as the canary ramps (the time-varying share is conditioned on, not pooled).

Implementation: the log-likelihood log L(ρ) = Σ x_c log θ(ρ, π) + x_p log(1 − θ(ρ, π)) is
kept on a fixed log-spaced grid of ρ (plus κ itself), which is exact for counts batched at a
constant share. The mixing prior is Beta(a, b) on q = ρ/(1 + ρ) (for π = ½, κ = 1 this is the
Beta-binomial test of the references, truncated to the alternative). The same grid gives a
two-sided e-value for every κ on the grid, so a confidence sequence for the rate ratio comes
from inverting it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

_GRID_LOG_RANGE = math.log(256.0)  # ratios from 1/256 to 256
_GRID_POINTS = 321  # ~3.5% steps in the ratio


def _logsumexp(x: NDArray[np.float64]) -> float:
    """log Σ exp(x) in plain numpy (scipy's is ~50× slower on these 322-point grids, and the
    judge calls it at every look)."""
    if x.size == 0:
        return -math.inf
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(x - m))))


def _theta(rho: NDArray[np.float64], share: float) -> NDArray[np.float64]:
    return np.asarray(share * rho / (share * rho + 1.0 - share), dtype=np.float64)


class ErrorCountEValue:
    """E-process for H0: r_c ≤ κ·r_p from error events and the candidate share at each."""

    def __init__(self, kappa: float = 1.0, a: float = 1.0, b: float = 1.0) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa: must be > 0 (got {kappa!r})")
        if not (a > 0 and b > 0):
            raise ValueError("a, b: Beta prior parameters must be > 0")
        self.kappa = float(kappa)
        self.a = float(a)
        self.b = float(b)
        grid = np.exp(np.linspace(-_GRID_LOG_RANGE, _GRID_LOG_RANGE, _GRID_POINTS))
        self._grid = np.unique(np.append(grid, self.kappa))
        self._kappa_index = int(np.searchsorted(self._grid, self.kappa))
        q = self._grid / (1.0 + self._grid)
        # Prior mass on each grid point: Beta(a, b) density of q times dq/dlog ρ = q(1 − q).
        logw = stats.beta.logpdf(q, self.a, self.b) + np.log(q) + np.log1p(-q)
        self._log_prior = logw - _logsumexp(logw)
        self._loglik = np.zeros_like(self._grid)
        self.candidate_errors = 0
        self.baseline_errors = 0
        self._max_log_e = 0.0

    @property
    def grid(self) -> NDArray[np.float64]:
        """The rate ratios the likelihood is tracked at (read-only copy)."""
        return self._grid.copy()

    @property
    def log_prior(self) -> NDArray[np.float64]:
        """Log mixing weights on `grid` (read-only copy)."""
        return self._log_prior.copy()

    @property
    def kappa_index(self) -> int:
        return self._kappa_index

    def update(self, candidate_errors: int, baseline_errors: int, candidate_share: float) -> None:
        """Add the error events of a window during which the candidate's share was π."""
        if candidate_errors < 0 or baseline_errors < 0:
            raise ValueError("candidate_errors, baseline_errors: must be ≥ 0")
        if not 0.0 < candidate_share < 1.0:
            raise ValueError(f"candidate_share: must be in (0, 1) (got {candidate_share!r})")
        if candidate_errors == 0 and baseline_errors == 0:
            return
        th = _theta(self._grid, candidate_share)
        self._loglik += candidate_errors * np.log(th) + baseline_errors * np.log1p(-th)
        self.candidate_errors += int(candidate_errors)
        self.baseline_errors += int(baseline_errors)
        self._max_log_e = max(self._max_log_e, self.log_e_value)

    def _log_e_against(self, index: int, *, alternative: str) -> float:
        ll = self._loglik - self._loglik[index]
        if alternative == "greater":
            sel = slice(index + 1, None)
        elif alternative == "less":
            sel = slice(0, index)
        else:
            sel = slice(None)
        lp = self._log_prior[sel]
        return float(_logsumexp(lp + ll[sel]) - _logsumexp(lp))

    @property
    def log_e_value(self) -> float:
        return self._log_e_against(self._kappa_index, alternative="greater")

    @property
    def e_value(self) -> float:
        """Current e-value against H0: r_c ≤ κ r_p; FAIL when ≥ 1/α."""
        return math.exp(min(self.log_e_value, 700.0))

    @property
    def max_e_value(self) -> float:
        """Running maximum (for anytime p-values, p = min(1, 1/sup E))."""
        return math.exp(min(self._max_log_e, 700.0))

    def pass_e_value(self, kappa: float) -> float:
        """E-value against H0': r_c ≥ κ'·r_p (κ' snapped down to the grid); PASS when ≥ 1/α."""
        idx = max(int(np.searchsorted(self._grid, kappa, side="right")) - 1, 0)
        return math.exp(min(self._log_e_against(idx, alternative="less"), 700.0))

    @property
    def ratio_estimate(self) -> float:
        """Maximum-likelihood rate ratio r_c/r_p on the grid (nan before any event)."""
        if self.candidate_errors + self.baseline_errors == 0:
            return math.nan
        return float(self._grid[int(np.argmax(self._loglik))])

    def lower_bound(self, alpha: float) -> float:
        """One-sided anytime lower bound for r_c/r_p: the test FAIL uses, inverted.

        The grid ratios κ' that the one-sided e-value (alternatives ρ > κ') does not reject at
        1/α form a confidence sequence; its lowest point, rounded down to the previous grid
        ratio, is the bound. Unlike the two-sided `ratio_cs`, it lies above κ when `e_value`
        ≥ 1/α, so a FAIL is shown with an interval that excludes the threshold.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        joint = self._log_prior + self._loglik
        # log Σ_{j>i} of joint and of prior, for every i (right-to-left running log-sum-exp)
        right = np.append(np.logaddexp.accumulate(joint[::-1])[::-1][1:], -np.inf)
        prior = np.append(np.logaddexp.accumulate(self._log_prior[::-1])[::-1][1:], -np.inf)
        with np.errstate(invalid="ignore"):
            log_e = right - self._loglik - prior
        kept = np.nonzero(~(log_e >= math.log(1.0 / alpha)))[0]
        first = int(kept[0]) if kept.size else self._grid.size - 1
        return 0.0 if first == 0 else float(self._grid[first - 1])

    def ratio_cs(self, alpha: float) -> tuple[float, float]:
        """Anytime-valid CS for r_c/r_p: grid ratios not rejected by the two-sided mixture."""
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        threshold = math.log(1.0 / alpha)
        lp = self._log_prior
        mix = float(_logsumexp(lp + self._loglik))
        log_e = mix - self._loglik  # two-sided e-value against each grid ratio
        keep = np.nonzero(log_e < threshold)[0]
        if keep.size == 0:  # the data fit no grid ratio (beyond the grid's range)
            est = self.ratio_estimate
            return (est, est)
        lo_i, hi_i = int(keep[0]), int(keep[-1])
        lo = 0.0 if lo_i == 0 else float(self._grid[lo_i - 1])  # round outward to the grid
        hi = math.inf if hi_i == self._grid.size - 1 else float(self._grid[hi_i + 1])
        return lo, hi

    def one_sided_cs(self, alpha: float) -> tuple[float, float]:
        """CS for r_c/r_p from the two one-sided e-values at α/2 each, rounded outward.

        A grid ratio g is excluded when the e-value against "ratio ≤ g" (mixture over the
        ratios above g) or against "ratio ≥ g" (mixture below g) reaches 2/α; at the true
        ratio each is an e-process, so the CS covers it with probability ≥ 1 − α at every
        look. These are the e-values the verdicts use, so a FAIL (lower ≥ κ) or a PASS
        (upper ≤ κ) is always shown with an interval on its side of the threshold.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        ll, lp = self._loglik, self._log_prior
        above = np.logaddexp.accumulate((lp + ll)[::-1])[::-1]  # Σ_{j ≥ i}
        prior_above = np.logaddexp.accumulate(lp[::-1])[::-1]
        below = np.logaddexp.accumulate(lp + ll)  # Σ_{j ≤ i}
        prior_below = np.logaddexp.accumulate(lp)
        n = ll.size
        log_greater = np.full(n, -np.inf)  # against "ratio ≤ g_i": mixture over j > i
        log_greater[:-1] = above[1:] - prior_above[1:] - ll[:-1]
        log_less = np.full(n, -np.inf)  # against "ratio ≥ g_i": mixture over j < i
        log_less[1:] = below[:-1] - prior_below[:-1] - ll[1:]
        level = math.log(2.0 / alpha)
        keep = np.nonzero((log_greater < level) & (log_less < level))[0]
        if keep.size == 0:
            est = self.ratio_estimate
            return (est, est)
        lo_i, hi_i = int(keep[0]), int(keep[-1])
        lo = 0.0 if lo_i == 0 else float(self._grid[lo_i - 1])
        hi = math.inf if hi_i == n - 1 else float(self._grid[hi_i + 1])
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return {
            "kappa": self.kappa,
            "a": self.a,
            "b": self.b,
            "loglik": self._loglik.tolist(),
            "candidate_errors": self.candidate_errors,
            "baseline_errors": self.baseline_errors,
            "max_log_e": self._max_log_e,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorCountEValue:
        obj = cls(float(data["kappa"]), float(data["a"]), float(data["b"]))
        loglik = np.asarray(data["loglik"], dtype=np.float64)
        if loglik.shape != obj._loglik.shape:
            raise ValueError("loglik: grid size does not match this version of Coalmine")
        obj._loglik = loglik
        obj.candidate_errors = int(data["candidate_errors"])
        obj.baseline_errors = int(data["baseline_errors"])
        obj._max_log_e = float(data["max_log_e"])
        return obj
