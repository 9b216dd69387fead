"""Criteria validation, prediction formats, the judge on literal statistics, resources."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError

from coalmine.analysis import Analysis, Criterion, Verdict, judge
from coalmine.analysis.criteria import parse_criteria
from coalmine.analysis.judge import Evidence
from coalmine.analysis.metrics import SliceStats
from coalmine.analysis.outputs import examples, log_loss, normalize
from coalmine.analysis.sequential import Moments
from coalmine.analysis.sources.resources import ResourceSampler
from coalmine.analysis.user_metrics import register_user_metric
from coalmine.config import ConfigError


def test_defaults_and_names() -> None:
    c = Criterion(metric="accuracy")
    assert (c.name, c.margin) == ("accuracy", 0.01)
    assert Criterion(metric="latency_p99").max_ratio == 1.2
    assert Criterion(metric="psi").max == 0.25
    crit = Criterion(metric="error_rate", error_classes=["timeout"])
    assert crit.critical and crit.margin is None


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"metric": "acuracy"}, "criteria.0.metric", "unknown metric 'acuracy'"),
        ({"metric": "accuracy", "max_ratio": 1.1}, "criteria.0", "does not take max_ratio"),
        ({"metric": "latency_mean", "margin": 5, "max_ratio": 1.1}, "criteria.0", "not both"),
        ({"metric": "mean_abs_diff"}, "criteria.0", "needs a threshold"),
        ({"metric": "outcome:ctr"}, "criteria.0", "needs a threshold"),
        ({"metric": "accuracy", "error_classes": ["x"]}, "criteria.0", "error_rate only"),
        ({"metric": "user:no_such_mod:f", "margin": 1}, "criteria.0.metric", "allow-listed"),
        ({"metric": "accuracy", "margn": 0.1}, "criteria.0.margn", "Extra inputs"),
        ({"metric": "accuracy", "margin": -1}, "criteria.0.margin", "greater than or equal"),
    ],
)
def test_bad_criteria_are_rejected_with_a_field_path(data: dict, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_criteria([data])
    assert any(p == path and reason in r for p, r in info.value.errors), info.value.errors


def test_duplicate_names_and_user_metrics() -> None:
    with pytest.raises(ConfigError, match="duplicate criterion names"):
        parse_criteria([{"metric": "accuracy"}, {"metric": "accuracy", "margin": 0.02}])
    register_user_metric("hypot", math.hypot)  # f(pred, label), allowed in this process
    c = Criterion(metric="user:hypot", margin=0.1, direction="lower")
    a = Analysis([c], max_slices=0, task="regression")
    a.add_batch("candidate", predictions=[3.0] * 50, labels=[4.0] * 50)
    a.add_batch("baseline", predictions=[3.0] * 50, labels=[4.0] * 50)
    r = a.judge().results[0]
    assert r.candidate_value == pytest.approx(5.0) and r.n_candidate == 50
    with pytest.raises(ValidationError):
        Criterion(metric="accuracy", direction="lower")


def test_prediction_formats() -> None:
    assert normalize({"predictions": [1]}, "classification")[0].cls == 1  # type: ignore[union-attr]
    probs = normalize({"predictions": [[0.1, 0.7, 0.2]]}, "classification")[0]
    assert probs is not None and probs.cls == 1 and probs.probs == (0.1, 0.7, 0.2)
    assert log_loss(probs, 1) == pytest.approx(-math.log(0.7))
    p1 = normalize(0.8, "classification")[0]
    assert p1 is not None and p1.cls == 1 and log_loss(p1, 0) == pytest.approx(-math.log(0.2))
    assert (
        normalize({"label": "cat", "probabilities": [0.9, 0.1]}, "classification")[0].cls == "cat"
    )  # type: ignore[union-attr]
    v2 = {"outputs": [{"name": "y", "shape": [1, 2], "data": [0.3, 0.7]}]}
    assert normalize(v2, "classification")[0].cls == 1  # type: ignore[union-attr]
    assert normalize({"predictions": [2.5]}, "regression")[0].value == 2.5  # type: ignore[union-attr]
    # several instances in one request: scored only with as many labels
    assert len(examples({"predictions": [1, 0]}, [1, 0], "classification")) == 2
    assert examples({"predictions": [1, 0]}, 1, "classification") == []


def test_judge_on_literal_statistics_writes_the_sentence() -> None:
    s = SliceStats()
    # candidate 0.871 on 4,000; production 0.903 on 40,000 (0/1 data: Σx² = Σx)
    s.candidate.cell(0).moments["accuracy"] = Moments(4000, 3484.0, 3484.0)
    s.baseline.cell(0).moments["accuracy"] = Moments(40000, 36120.0, 36120.0)
    r = judge(Criterion(metric="accuracy", margin=0.01), Evidence(s, "canary"), 0.05)
    assert r.verdict is Verdict.FAIL
    assert r.estimate == pytest.approx(-0.032)
    assert r.lower < r.upper < -0.01 and r.threshold == -0.01
    assert r.sentence.startswith("canary accuracy 0.871 vs 0.903 (−3.2 pts, 95% CS −")
    assert r.sentence.endswith("is below the allowed −1.0 pts: FAIL")
    ok = judge(Criterion(metric="accuracy", margin=0.05), Evidence(s, "canary"), 0.05)
    assert ok.verdict is Verdict.PASS and "is within the allowed −5.0 pts: PASS" in ok.sentence


def test_p99_needs_thousands_of_samples_before_it_can_pass() -> None:
    a = Analysis([Criterion(metric="latency_p99", max_ratio=1.3)], max_slices=0)
    a.add_batch("candidate", latency_ms=[10.0 + i % 7 for i in range(1000)])
    a.add_batch("baseline", latency_ms=[10.0 + i % 7 for i in range(20000)])
    r = a.judge().results[0]
    assert r.verdict is Verdict.INCONCLUSIVE and math.isinf(r.upper)
    a.add_batch("candidate", latency_ms=[10.0 + i % 7 for i in range(9000)])
    assert a.judge().results[0].verdict is Verdict.PASS


def test_state_round_trips_through_json() -> None:
    import json

    a = Analysis([Criterion(metric="accuracy"), Criterion(metric="error_rate", max_ratio=2.0),
                  Criterion(metric="psi")])  # fmt: skip
    a.add_batch("candidate", predictions=[1, 0] * 50, labels=[1, 1] * 50,
                errors=[None, "timeout"] * 50, steps=[500] * 100,
                slices=[{"r": "eu"}] * 100)  # fmt: skip
    a.add_batch("baseline", predictions=[1, 1] * 50, labels=[1, 1] * 50, steps=[500] * 100)
    b = Analysis.from_state(json.loads(json.dumps(a.state_dict())))
    assert a.judge(now=1.0).to_dict() == b.judge(now=1.0).to_dict()


def test_resource_sampler_reads_a_real_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "x = bytearray(50 * 2**20)\nwhile True: pass"])
    try:
        sampler = ResourceSampler({"v2": [proc.pid], "gone": [2**22 + 12345]})
        time.sleep(0.5)
        got = sampler.sample()
        assert set(got) == {"v2"}
        assert got["v2"]["memory_mb"] > 40 and got["v2"]["cpu"] > 10
    finally:
        proc.kill()
        proc.wait()


def test_the_documented_example_runs() -> None:
    import doctest

    import coalmine.analysis

    result = doctest.testmod(coalmine.analysis)
    assert result.attempted >= 5 and result.failed == 0
