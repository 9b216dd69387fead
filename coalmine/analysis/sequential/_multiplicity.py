"""Error control across criteria and slices: any false FAIL rolls a good model back.

Anytime p-values come from e-processes (p_t = min(1, 1/sup_{s≤t} E_s), valid by Ville) or
from the running minimum of any anytime-valid p-value; Holm and Bonferroni then control the
family-wise error at every look. e-BH (Wang & Ramdas 2022, JRSS-B) controls the false
discovery rate among reported slices under arbitrary dependence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def e_to_p(e_running_max: float) -> float:
    """Anytime-valid p-value from the running maximum of an e-process."""
    if math.isnan(e_running_max) or e_running_max < 0:
        raise ValueError(f"e_running_max: must be ≥ 0 (got {e_running_max!r})")
    return 1.0 if e_running_max <= 1.0 else 1.0 / e_running_max


def bonferroni_alpha(alpha: float, k: int) -> float:
    """Per-test level that keeps the family-wise error of k tests at α."""
    if k < 1:
        raise ValueError(f"k: must be ≥ 1 (got {k})")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
    return alpha / k


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses to reject at family-wise level α."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    reject = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] <= alpha / (m - rank):
            reject[i] = True
        else:
            break
    return reject


def e_bh(e_values: Sequence[float], alpha: float) -> list[bool]:
    """e-BH: reject the k largest e-values, k = max{k : e_(k) ≥ K/(α k)}."""
    m = len(e_values)
    if m == 0:
        return []
    order = sorted(range(m), key=lambda i: e_values[i], reverse=True)
    k_star = 0
    for k in range(1, m + 1):
        if e_values[order[k - 1]] >= m / (alpha * k):
            k_star = k
    reject = [False] * m
    for i in order[:k_star]:
        reject[i] = True
    return reject
