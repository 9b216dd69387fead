"""The start-up planner predicts what the judge does (issue 15).

`step_can_decide` sizes a step with the construction the judge runs for canary proportions:
the score form, whose boundary takes the variance at the threshold tested where that is
larger than the candidate's own. Planned at 50% power, its n must be within a factor 1.4 of
the simulated median candidate samples to decide, through the real `judge()` over the
controller's looks (5% canary, a look every 50 candidate samples). The plug-in plan said
1,100 where the judge needs a median 1,650 (accuracy 0.99, margin 1 point): 1.5× optimistic.
"""

from __future__ import annotations

import pytest

from coalmine.analysis.boundary import Scenario, run_binary
from coalmine.analysis.plan import step_can_decide
from coalmine.analysis.sequential import Verdict

FACTOR = 1.4
RPS = 1_000.0  # any rate: the plan's samples do not depend on it


def _planned(base: float, effect: float, margin: float, *, as_good: bool) -> int:
    plan = step_can_decide(share_percent=5, rps=RPS, label_rate=1.0, min_effect=effect,
                           base=base, margin=margin, power=0.5, as_good=as_good)  # fmt: skip
    assert plan.anytime_samples is not None
    return plan.anytime_samples


CASES = {
    # name: (base, candidate, margin, verdict, planned effect, as_good)
    "accuracy 0.99 as good, margin 1 pt: PASS": (0.99, 0.99, 0.01, Verdict.PASS, 0.01, True),
    "accuracy 0.90 -> 0.88, margin 0: FAIL": (0.90, 0.88, 0.0, Verdict.FAIL, 0.02, False),
    "accuracy 0.99 -> 0.97, margin 1 pt: FAIL": (0.99, 0.97, 0.01, Verdict.FAIL, 0.02, False),
}
SLOW_CASES = {
    "accuracy 0.90 as good, margin 1 pt: PASS": (0.90, 0.90, 0.01, Verdict.PASS, 0.01, True),
}


def _check(name: str, case: tuple[float, float, float, Verdict, float, bool]) -> None:
    base, cand, margin, verdict, effect, as_good = case
    sc = Scenario({"metric": "accuracy", "margin": margin}, looks=400, per_look=50,
                  rates=lambda k: (cand, base))  # fmt: skip
    simulated = run_binary(sc, 100, seed=2).median_samples(verdict)
    planned = _planned(base, effect, margin, as_good=as_good)
    assert simulated / FACTOR <= planned <= simulated * FACTOR, (name, planned, simulated)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_planned_n_is_near_the_simulated_median(name: str) -> None:
    _check(name, CASES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_the_planned_n_is_near_the_simulated_median_slow(name: str) -> None:
    _check(name, SLOW_CASES[name])
