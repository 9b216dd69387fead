"""The planner and the start-up warnings of a paired canary (canary.paired): accuracy is
judged on same-request pairs, so its wait follows the paired variance, not the share."""

from __future__ import annotations

import pytest

from coalmine.analysis.plan import paired_variance, step_can_decide
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.planning import plan_warnings
from coalmine.rollout.spec import parse_spec


def _plan(share: float, **kw: object) -> int:
    plan = step_can_decide(share_percent=share, rps=100, label_rate=1.0, min_effect=0.02, **kw)
    assert plan.anytime_samples is not None
    return plan.anytime_samples


def test_paired_samples_follow_the_disagreement_and_not_the_share() -> None:
    # accuracy 0.90 -> 0.88: when the versions' correctness differs on 4% of requests the
    # paired variance is 0.04 - 0.02² against ~0.11 per candidate sample unpaired at 5%
    assert paired_variance(0.9, 0.02, 0.04) == pytest.approx(0.04 - 0.0004)
    assert paired_variance(0.9, 0.02) == pytest.approx(0.22 - 0.0004)  # errors never coincide
    paired = [_plan(s, paired=True, disagreement=0.04) for s in (1, 5, 25, 50)]
    unpaired = [_plan(s) for s in (1, 5, 25, 50)]
    assert len(set(paired)) == 1
    assert all(p < u / 2 for p, u in zip(paired, unpaired, strict=True))
    # the worst case is dearer than unpaired at 5%: pairing pays only when errors coincide
    assert _plan(5, paired=True) > _plan(5)
    with pytest.raises(ValueError, match="disagreement"):
        _plan(5, paired=True, disagreement=1.5)


def _warnings(paired: bool, rps: float) -> list[str]:
    spec = parse_spec(
        {"shadow": {"enabled": False},
         "canary": {"steps": [5, 100], "max_duration": "10m", "paired": paired,
                    "criteria": [{"metric": "accuracy", "must": "pass"},
                                 {"metric": "error_rate"}]}}
    )  # fmt: skip
    return plan_warnings(spec, build_criteria(spec, "canary"), rps=rps, label_rate=1.0)


def test_start_up_warnings_use_the_paired_cost_and_say_what_disagreement_would_do() -> None:
    [unpaired] = _warnings(False, 300)
    [paired] = _warnings(True, 300)
    assert "paired with stable's answers" in paired and "paired" not in unpaired
    assert "worst case" in paired and "at most 4.3% of requests" in paired
    n = lambda w: int(w.split("needs ~")[1].split()[0].replace(",", ""))  # noqa: E731
    assert n(paired) > n(unpaired)
    # error rate is judged on served calls either way: the same words paired or not
    assert [w for w in _warnings(True, 10) if w.startswith("error_rate")] == [
        w for w in _warnings(False, 10) if w.startswith("error_rate")
    ]
