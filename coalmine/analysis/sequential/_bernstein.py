"""Predictable plug-in empirical-Bernstein confidence sequence for [0, 1]-bounded data.

Waudby-Smith & Ramdas (2024, JRSS-B, arXiv:2010.09686), Theorem 2 (PrPl-EB): with
predictable λ_i and μ̂_{i−1}, the process exp(Σλ_i(X_i − μ) − Σ v_i ψ_E(λ_i)),
v_i = 4(X_i − μ̂_{i−1})², ψ_E(λ) = (−log(1 − λ) − λ)/4, is a nonnegative supermartingale,
so the CS Σλ_iX_i/Σλ_i ± (log(2/α) + Σv_iψ_E(λ_i))/Σλ_i holds at every time with probability
≥ 1 − α. Unlike the normal mixture it rests on no asymptotics.

Streaming in batches: validity only needs λ_i and μ̂_{i−1} to be fixed before X_i is seen, so
within a batch we use the plug-ins from the start of the batch (λ still decays with i). This
keeps `update` vectorised and the state O(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from coalmine.analysis.sequential._decision import Interval


@dataclass
class BernsteinState:
    """Running sums of the PrPl-EB CS for one stream of values in [0, 1]."""

    design_alpha: float = 0.05  # λ is tuned for this level; `interval` may ask for any α
    max_lambda: float = 0.5
    t: int = 0
    sum_x: float = 0.0  # for μ̂
    sum_sq_dev: float = 0.0  # Σ (X_i − μ̂_i)² for σ̂²
    sum_lambda: float = 0.0
    sum_lambda_x: float = 0.0
    sum_v_psi: float = 0.0

    def _plugins(self) -> tuple[float, float]:
        mu = (0.5 + self.sum_x) / (self.t + 1)
        var = (0.25 + self.sum_sq_dev) / (self.t + 1)
        return mu, var

    def update(self, values: ArrayLike) -> None:
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        if not np.all(np.isfinite(x)) or np.any(x < 0.0) or np.any(x > 1.0):
            raise ValueError("values: must lie in [0, 1] for the empirical-Bernstein CS")
        mu, var = self._plugins()
        i = self.t + np.arange(1, x.size + 1, dtype=np.float64)  # 1-based time of each value
        lam = np.minimum(
            np.sqrt(2.0 * math.log(2.0 / self.design_alpha) / (var * i * np.log1p(i))),
            self.max_lambda,
        )
        v = 4.0 * (x - mu) ** 2
        psi = (-np.log1p(-lam) - lam) / 4.0
        self.sum_lambda += float(lam.sum())
        self.sum_lambda_x += float(np.dot(lam, x))
        self.sum_v_psi += float(np.dot(v, psi))
        # Exact running plug-ins μ̂_i (used for σ̂² and the next batch).
        cum = self.sum_x + np.cumsum(x)
        mu_i = (0.5 + cum) / (i + 1.0)
        self.sum_sq_dev += float(np.sum((x - mu_i) ** 2))
        self.sum_x = float(cum[-1])
        self.t += int(x.size)

    def interval(
        self, alpha: float, *, sides: Literal["two", "lower", "upper"] = "two"
    ) -> Interval:
        """CS for the stream's mean, clipped to [0, 1]; [0, 1] before any data."""
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        if self.t == 0 or self.sum_lambda <= 0:
            return Interval(0.0, 1.0, math.nan)
        est = self.sum_lambda_x / self.sum_lambda
        level = math.log((2.0 if sides == "two" else 1.0) / alpha)
        r = (level + self.sum_v_psi) / self.sum_lambda
        lo = max(0.0, est - r) if sides in ("two", "lower") else 0.0
        hi = min(1.0, est + r) if sides in ("two", "upper") else 1.0
        return Interval(lo, hi, self.sum_x / self.t)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BernsteinState:
        return cls(**data)


def bernstein_cs(
    candidate: BernsteinState,
    baseline: BernsteinState,
    alpha: float,
    *,
    sides: Literal["two", "lower", "upper"] = "two",
) -> Interval:
    """CS for Δ = mean_c − mean_p: each arm's CS at α/2, combined as [L_c − U_p, U_c − L_p].

    A one-sided request uses one-sided arm intervals (each at α/2), so the bound is exact
    for bounded data under continuous monitoring.
    """
    half = alpha / 2.0
    if sides == "two":
        c, p = candidate.interval(half), baseline.interval(half)
        lo, hi = c.lower - p.upper, c.upper - p.lower
    elif sides == "lower":
        c, p = candidate.interval(half, sides="lower"), baseline.interval(half, sides="upper")
        lo, hi = c.lower - p.upper, math.inf
    elif sides == "upper":
        c, p = candidate.interval(half, sides="upper"), baseline.interval(half, sides="lower")
        lo, hi = -math.inf, c.upper - p.lower
    else:
        raise ValueError(f"sides: must be 'two', 'lower' or 'upper' (got {sides!r})")
    if candidate.t == 0 or baseline.t == 0:
        return Interval(
            -1.0 if sides != "upper" else -math.inf, 1.0 if sides != "lower" else math.inf, math.nan
        )
    return Interval(lo, hi, c.estimate - p.estimate)
