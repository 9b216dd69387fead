"""Family-wise error across criteria × slices: weighted Holm on anytime-valid tests (pure).

Any false FAIL rolls a good model back, so P(any true null FAILs at any look) ≤ α over the
whole family: every statistical criterion on all traffic, and every sliced criterion on each
of the (at most `max_slices`) judged slices. Each member i has a weight w_i, the weights of
all members summing to 1 (slots of slices not yet judged keep theirs): with slicing on, all
traffic gets half (1/(2C) per criterion, C statistical criteria) and the slices the other
half (1/(2·C_s·K) per criterion and slice) — the old Bonferroni split, which is Holm's first
round; without slices all traffic gets 1/C each.

Holm in rounds (weighted; Holm 1979): judge every member at α·w_i/W with W the weight not
yet rejected (W = 1 at first); FAIL rejects; repeat with the new W until no new FAIL.
Member i's anytime-valid p-value is p_i = inf{a : its test FAILs at level a}: a FAIL at
level α·w_i/W is exactly p_i ≤ α·w_i/W, computed by re-running the test at that level
instead of from e-values (not every construction has one; all have nested confidence
sequences). Validity at every look: if a true null i is rejected, it is in a round whose
not-rejected set contains every true null I0, so W ≥ W(I0) and its test FAILed at a level
≤ α·w_i/W(I0); nested sequences make it FAIL at α·w_i/W(I0) too. By Ville each true null
does so, ever, with probability ≤ α·w_i/W(I0), and the union over I0 sums to α.

PASS and INCONCLUSIVE are read at the first round's level α·w_i: a larger level from later
rounds would make PASS easier, and later rounds only happen once something FAILed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from coalmine.analysis.result import CriterionResult
from coalmine.analysis.sequential import Verdict

__all__ = ["holm"]

K = TypeVar("K", bound=Hashable)


def holm(
    weights: Mapping[K, float], alpha: float, judge_at: Callable[[K, float], CriterionResult]
) -> dict[K, CriterionResult]:
    """Each member's result under weighted Holm; `judge_at(member, level)` runs its test.

    `weights` may sum to less than 1: the rest belongs to members that have no data yet
    (slice slots not yet filled), which never reject.
    """
    results = {k: judge_at(k, alpha * w) for k, w in weights.items()}
    rejected = {k for k, r in results.items() if r.verdict is Verdict.FAIL}
    while rejected and len(rejected) < len(weights):
        remaining = 1.0 - sum(weights[k] for k in rejected)
        new = {}
        for k, w in weights.items():
            if k not in rejected:
                r = judge_at(k, min(alpha * w / remaining, alpha))
                if r.verdict is Verdict.FAIL:
                    new[k] = r
        if not new:
            break
        results.update(new)
        rejected.update(new)
    return results
