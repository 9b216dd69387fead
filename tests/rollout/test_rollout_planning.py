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


def test_a_latency_quantile_that_cannot_get_a_finite_bound_is_flagged() -> None:
    spec = parse_spec(
        {"canary": {"steps": [1, 50, 100], "max_duration": "1m",
                    "criteria": [{"metric": "latency_p99", "max_ratio": 1.2},
                                 {"metric": "latency_p50", "max_ratio": 1.2}]}}
    )  # fmt: skip
    criteria = build_criteria(spec, "canary")
    # 50 req/s: 30 calls at 1%, 1,500 at 50% within a minute
    warnings = plan_warnings(spec, criteria, rps=50, label_rate=1.0)
    assert any(w.startswith("latency_p99: step 1%") for w in warnings)
    assert any(w.startswith("latency_p99: step 50%") for w in warnings)  # p99 needs > 3,000
    assert any(w.startswith("latency_p50: step 1%") for w in warnings)
    assert not any(w.startswith("latency_p50: step 50%") for w in warnings)
    assert not any("step 100%" in w for w in warnings)
    assert plan_warnings(spec, criteria, rps=100_000, label_rate=1.0) == []


def test_quantile_min_samples_matches_the_kernel_bound() -> None:
    from coalmine.analysis.sequential import quantile_cs_radius, quantile_min_samples

    for p in (0.5, 0.95, 0.99):
        n = quantile_min_samples(p, 0.05)
        assert p + quantile_cs_radius(n, p, 0.05) < 1 <= p + quantile_cs_radius(n - 1, p, 0.05)
