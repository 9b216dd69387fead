"""What the dashboard's numbers are on, their feasible ranges, and the verdict's words."""

from __future__ import annotations

import math

from coalmine.ui.render import _warning_groups
from coalmine.ui.scales import clipped_result, criterion_kinds, judgement_word, scale_of


def _result(metric: str, name: str | None = None, **kw: object) -> dict[str, object]:
    return {"name": name or metric, "metric": metric, "slice": None, "verdict": "inconclusive",
            "estimate": 0.0, "lower": -3.56, "upper": 5.56, **kw}  # fmt: skip


def test_scales_follow_the_thresholds_and_clip_to_the_metric_range() -> None:
    canary = [{"metric": "error_rate", "max": 0.02}, {"metric": "latency_p95", "max_ratio": 1.3}]
    shadow = [{"metric": "agreement", "min": 0.9}]
    kinds = criterion_kinds({"canary": {"criteria": canary}, "shadow": {"criteria": shadow}})
    assert kinds == {"error_rate": "value", "latency_p95": "ratio", "agreement": "value"}

    accuracy = scale_of(_result("accuracy"), {}, "production")  # the default: a margin
    assert accuracy.label == "accuracy: candidate − production (fraction; 0.01 = 1 point)"
    clipped = clipped_result(_result("accuracy"), accuracy)
    assert (clipped["lower"], clipped["upper"], clipped["clipped"]) == (-1.0, 1.0, True)

    agreement = scale_of(_result("agreement"), kinds, "production")
    assert agreement.label == "agreement with production (fraction, 0–1)"
    assert clipped_result(_result("agreement", upper=1.7), agreement)["upper"] == 1.0

    ratio = scale_of(_result("latency_p95"), kinds, "baseline")
    assert ratio.label == "latency_p95: candidate ÷ baseline"
    out = clipped_result(_result("latency_p95", lower=-0.2, upper=math.inf), ratio)
    assert out["lower"] == 0.0 and out["upper"] == math.inf

    errors = scale_of(_result("error_rate"), kinds, "production")
    assert (errors.kind, errors.low, errors.high) == ("value", 0.0, 1.0)


def test_pass_with_criteria_not_passed_is_nothing_failed() -> None:
    inconclusive = [_result("accuracy"), _result("error_rate", verdict="pass")]
    assert judgement_word({"verdict": "pass"}, inconclusive) == "NOTHING FAILED"
    passed = [_result("accuracy", verdict="pass"), _result("error_rate", verdict="pass")]
    assert judgement_word({"verdict": "pass"}, passed) == "PASS"
    assert judgement_word({"verdict": "fail"}, inconclusive) == "FAIL"
    assert judgement_word(None, []) == "—"


def test_startup_warnings_group_by_the_criterion_they_name() -> None:
    warnings = [
        "step 1%: accuracy needs 4,000 labelled samples",
        "p95_latency: a bound needs about 570 calls",
        "step 5%: accuracy needs 900 labelled samples",
        "no traffic seen yet: the plan cannot be checked",
    ]
    assert _warning_groups(warnings) == [
        ("accuracy", [warnings[0], warnings[2]]),
        ("p95_latency", [warnings[1]]),
        ("rollout", [warnings[3]]),
    ]
