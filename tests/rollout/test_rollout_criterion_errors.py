"""A bad criterion in a rollout spec is refused with its field path and its reason in words
(not pydantic's generic link): misspelled metrics get the closest name and the known ones."""

from __future__ import annotations

import pytest

from coalmine.config import ConfigError
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.spec import parse_spec


def _errors(criterion: dict[str, object], mode: str = "canary") -> list[tuple[str, str]]:
    spec = parse_spec({mode: {"criteria": [{"metric": "error_rate"}, criterion]}})
    with pytest.raises(ConfigError) as info:
        build_criteria(spec, mode)
    return info.value.errors


@pytest.mark.parametrize(
    ("metric", "suggestion"),
    [("acuracy", "accuracy"), ("Accuracy", "accuracy"), ("latancy_p95", "latency_p95"),
     ("errors", "error_rate"), ("outcom:clicked", "outcome:clicked")],
)  # fmt: skip
def test_a_misspelled_metric_says_what_was_meant(metric: str, suggestion: str) -> None:
    [(path, reason)] = _errors({"metric": metric})
    assert path == "canary.criteria.1.metric"
    assert reason.startswith(f"unknown metric {metric!r}; did you mean {suggestion!r}?")
    assert "known: error_rate, latency_mean" in reason and "errors.pydantic.dev" not in reason


def test_latency_p100_names_the_quantiles_there_are() -> None:
    [(path, reason)] = _errors({"metric": "latency_p100"})
    assert path == "canary.criteria.1.metric"
    assert "latency_p50, latency_p95, latency_p99" in reason and "pydantic" not in reason


def test_a_user_metric_without_threshold_says_why() -> None:
    import math

    from coalmine.analysis.user_metrics import register_user_metric

    register_user_metric("hypot", math.hypot)  # allow-listed in this process
    [(path, reason)] = _errors({"metric": "user:hypot"}, mode="shadow")
    assert path == "shadow.criteria.1"
    assert "needs a threshold" in reason and "no default threshold" in reason
    assert "margin" in reason and "pydantic" not in reason


def test_field_errors_keep_their_own_path_and_words() -> None:
    [(path, reason)] = _errors({"metric": "accuracy", "margin": -1})
    assert path == "canary.criteria.1.margin" and "greater than or equal to 0" in reason
    [(path, reason)] = _errors({"metric": "accuracy", "max_ratio": 2})
    assert (
        path == "canary.criteria.1"
        and reason == "accuracy does not take max_ratio; use margin or min"
    )
