"""Drift of a prediction distribution between two binned samples (shadow without labels).

Both measures smooth empty bins (add ½ to every count) so a bin seen on one side only gives a
large but finite contribution. Usual alert levels for PSI: < 0.1 stable, 0.1–0.2 moderate,
> 0.2 significant shift. Jensen–Shannon divergence is in bits, within [0, 1].
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
JS_SIGNIFICANT = 0.1  # bits; about PSI 0.2–0.3 for modest shifts


def _proportions(counts: ArrayLike, name: str) -> NDArray[np.float64]:
    c = np.asarray(counts, dtype=np.float64).ravel()
    if c.size == 0 or np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError(f"{name}: must be a non-empty list of counts ≥ 0")
    c = c + 0.5
    return np.asarray(c / c.sum(), dtype=np.float64)


def _pair(
    a: ArrayLike, b: ArrayLike, na: str, nb: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p, q = _proportions(a, na), _proportions(b, nb)
    if p.size != q.size:
        raise ValueError(f"{nb}: must have as many bins as {na} ({q.size} != {p.size})")
    return p, q


def psi(expected_counts: ArrayLike, actual_counts: ArrayLike) -> float:
    """Population stability index Σ (a − e) log(a/e) over bins."""
    e, a = _pair(expected_counts, actual_counts, "expected_counts", "actual_counts")
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p_counts: ArrayLike, q_counts: ArrayLike) -> float:
    """Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint)."""
    p, q = _pair(p_counts, q_counts, "p_counts", "q_counts")
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def psi_level(value: float) -> str:
    """'stable', 'moderate' or 'significant' by the usual PSI thresholds."""
    if value < PSI_MODERATE:
        return "stable"
    if value < PSI_SIGNIFICANT:
        return "moderate"
    return "significant"
