"""Prediction-distribution drift from binned counts: PSI and Jensen–Shannon (pure).

Alert levels in common use for PSI: < 0.1 no real change, 0.1–0.25 moderate, ≥ 0.25 a
significant shift. These are descriptive statistics, not anytime-valid tests: the judge
reports them once both arms have `MIN_N` predictions and compares with the limit.

Sparse bins inflate PSI (its bias is about (bins − 1)·(1/n_c + 1/n_b)), so adjacent bins are
merged in value order until each holds ≥ `MIN_SHARE` of the baseline, and a half count is
added to every bin so empty bins stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["MIN_N", "align", "js_divergence", "level", "psi"]

MIN_N = 1000
MIN_SHARE = 0.10


def align(
    candidate: Mapping[str, int], baseline: Mapping[str, int], order: Callable[[str], object]
) -> tuple[np.ndarray, np.ndarray]:
    """Count vectors over merged bins (each ≥ MIN_SHARE of the baseline, in value order)."""
    keys = sorted(set(candidate) | set(baseline), key=order)  # type: ignore[arg-type]
    total_b = sum(baseline.values()) or 1
    c_out: list[float] = []
    b_out: list[float] = []
    acc_c = acc_b = 0.0
    for k in keys:
        acc_c += candidate.get(k, 0)
        acc_b += baseline.get(k, 0)
        if acc_b >= MIN_SHARE * total_b:
            c_out.append(acc_c)
            b_out.append(acc_b)
            acc_c = acc_b = 0.0
    if acc_c or acc_b:
        if c_out:
            c_out[-1] += acc_c
            b_out[-1] += acc_b
        else:
            c_out.append(acc_c)
            b_out.append(acc_b)
    return np.asarray(c_out), np.asarray(b_out)


def _probs(c: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = c + 0.5
    b = b + 0.5
    return c / c.sum(), b / b.sum()


def psi(c: np.ndarray, b: np.ndarray) -> float:
    """Population stability index Σ (c − b)·ln(c/b) over aligned bins."""
    if len(c) == 0:
        return math.nan
    p, q = _probs(c, b)
    return float(np.sum((p - q) * np.log(p / q)))


def js_divergence(c: np.ndarray, b: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint)."""
    if len(c) == 0:
        return math.nan
    p, q = _probs(c, b)
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def level(psi_value: float) -> str:
    if psi_value >= 0.25:
        return "significant shift"
    if psi_value >= 0.1:
        return "moderate shift"
    return "no real shift"
