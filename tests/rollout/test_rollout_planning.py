"""Start-of-rollout warnings: steps that cannot decide within their maximum duration."""

from __future__ import annotations

from coalmine.rollout.judge import build_criteria
from coalmine.rollout.planning import plan_warnings
from coalmine.rollout.spec import parse_spec

SPEC = parse_spec(
    {
        "canary": {
            "steps": [1, 50, 100],
            "max_duration": "10m",
            "criteria": [{"metric": "accuracy"}, {"metric": "error_rate"}],
        }
    }
)
CRITERIA = build_criteria(SPEC, "canary")


def test_low_traffic_at_one_percent_is_flagged_and_the_big_step_is_not() -> None:
    warnings = plan_warnings(SPEC, CRITERIA, rps=2000, label_rate=0.5)
    assert any(w.startswith("accuracy: step 1%") and "INCONCLUSIVE" in w for w in warnings)
    assert not any("step 50%" in w for w in warnings)
    assert not any("step 100%" in w for w in warnings)  # 100% has nothing to compare with


def test_enough_traffic_means_no_warning() -> None:
    assert plan_warnings(SPEC, CRITERIA, rps=50_000, label_rate=1.0) == []


def test_no_traffic_and_no_labels_are_said_plainly() -> None:
    [only] = plan_warnings(SPEC, CRITERIA, rps=0, label_rate=0)
    assert "no traffic" in only
    no_labels = plan_warnings(SPEC, CRITERIA, rps=50_000, label_rate=0)
    assert any("needs labels" in w for w in no_labels)
