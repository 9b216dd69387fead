"""Start-of-rollout warnings: steps that cannot decide within their maximum duration, in
words that match what the step then does, at the rate THIS model's traffic was seen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, update

from coalmine.config import parse_config
from coalmine.log.record import PredictionRecord
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.planning import observed_rates, plan_warnings
from coalmine.rollout.spec import parse_spec
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import feedback, predictions

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
    warnings = plan_warnings(SPEC, CRITERIA, rps=25, label_rate=1.0)
    # accuracy is not_fail in canary: its 1% step must rule out its power floor, and holds
    [one] = [w for w in warnings if w.startswith("accuracy: step 1%")]
    assert "ruling out a regression larger than 21 points needs" in one
    assert "labelled candidate samples" in one and "on_inconclusive (hold and alert)" in one
    assert "INCONCLUSIVE" not in one
    assert not any("step 50%" in w for w in warnings)
    assert not any("step 100%" in w for w in warnings)  # 100% has nothing to compare with


def test_enough_traffic_means_no_warning() -> None:
    assert plan_warnings(SPEC, CRITERIA, rps=50_000, label_rate=1.0) == []


def test_no_traffic_and_no_labels_are_said_plainly() -> None:
    [only] = plan_warnings(SPEC, CRITERIA, rps=0, label_rate=0)
    assert "no traffic" in only
    no_labels = plan_warnings(SPEC, CRITERIA, rps=50_000, label_rate=0)
    assert any(w.startswith("accuracy: step 1%: it needs labels") for w in no_labels)
    assert not any(w.startswith("error_rate") for w in no_labels)  # it needs no labels


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


def test_error_rate_is_sized_in_calls_not_labelled_samples() -> None:
    warnings = plan_warnings(SPEC, CRITERIA, rps=3, label_rate=0.01)
    [err] = [w for w in warnings if w.startswith("error_rate: step 1%")]
    assert "candidate calls" in err and "labelled" not in err


def test_the_words_follow_what_the_step_does() -> None:
    spec = parse_spec({"canary": {"steps": [1, 100], "max_duration": "10m", "criteria": [
        {"metric": "accuracy", "rule_out": [], "name": "bare"},
        {"metric": "accuracy", "must": "pass", "name": "proven"},
        {"metric": "accuracy", "name": "floored"},
    ], "on_inconclusive": "fail"}})  # fmt: skip
    warnings = plan_warnings(spec, build_criteria(spec, "canary"), rps=20, label_rate=0.5)
    bare, proven, floored = (next(w for w in warnings if w.startswith(n + ":"))
                             for n in ("bare", "proven", "floored"))  # fmt: skip
    assert "advances on not_fail without that" in bare and "on_inconclusive" not in bare
    assert proven.startswith("proven: step 1%: deciding needs")
    assert "on_inconclusive (roll back)" in proven
    assert "ruling out a regression larger than 21 points" in floored
    assert not any("INCONCLUSIVE" in w for w in warnings)


def _store(tmp_path: Path) -> Engine:
    config = parse_config({
        "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "models": [{"name": n, "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                    "routing": {"stable": "v1"}} for n in ("iris", "other")],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    return engine


def _serve(engine: Engine, model: str, rate: float, seconds: float, now: float) -> list[str]:
    n = int(rate * seconds)
    ids = [f"{model}-{i}" for i in range(n)]
    insert_batch(engine, [
        PredictionRecord(request_id=rid, model=model, version="v1", role="stable",
                         ts=now - seconds + i / rate, latency_ms=5.0, status=200, prediction=1)
        for i, rid in enumerate(ids)
    ])  # fmt: skip
    return ids


def _label(engine: Engine, ids: list[str], now: float) -> None:
    with engine.begin() as conn:
        conn.execute(insert(feedback), [{"request_id": r, "label": "1", "ts": now} for r in ids])


def test_rates_are_over_the_time_traffic_was_seen_and_this_models_labels(tmp_path: Path) -> None:
    engine = _store(tmp_path)
    now = time.time()
    # iris started 20 s ago at 20 req/s, a quarter labelled; other is busy and fully labelled
    iris = _serve(engine, "iris", 20, 20, now)
    _label(engine, iris[::4], now)
    _label(engine, _serve(engine, "other", 50, 60, now), now)
    seen = observed_rates(engine, "iris", now)
    assert seen.rps == pytest.approx(20, rel=0.1)  # before: 400 calls / 300 s = 1.3 req/s
    assert seen.label_rate == pytest.approx(0.25)  # before: 1.0 (every model's feedback)
    engine.dispose()


def test_rates_count_the_calls_a_sampled_stable_row_stands_for(tmp_path: Path) -> None:
    """logging.stable_sample_rate 0.1: each kept stable row stands for 10 calls (before:
    the plan saw a tenth of the traffic and warned that steps could not decide)."""
    engine = _store(tmp_path)
    now = time.time()
    iris = _serve(engine, "iris", 2, 20, now)  # 40 kept rows over 20 s
    with engine.begin() as conn:
        conn.execute(update(predictions).values(sample_weight=10.0))
    _label(engine, iris[::4], now)
    seen = observed_rates(engine, "iris", now)
    assert seen.rps == pytest.approx(20, rel=0.1)
    assert seen.label_rate == pytest.approx(0.25)
    engine.dispose()


def test_too_little_traffic_is_said_instead_of_a_plan(tmp_path: Path) -> None:
    engine = _store(tmp_path)
    now = time.time()
    _serve(engine, "iris", 4, 3, now)  # 12 calls in 3 s
    seen = observed_rates(engine, "iris", now)
    [only] = plan_warnings(SPEC, CRITERIA, rps=seen.rps, label_rate=seen.label_rate,
                           traffic=seen)  # fmt: skip
    assert only.startswith("too little traffic seen to plan (12 calls over 3 s)")
    engine.dispose()


def test_a_slow_rate_is_not_printed_as_zero() -> None:
    p99 = {"metric": "latency_p99", "max_ratio": 1.2}
    spec = parse_spec({"canary": {"steps": [50, 100], "max_duration": "1m", "criteria": [p99]}})
    [only] = plan_warnings(spec, build_criteria(spec, "canary"), rps=0.4, label_rate=1.0)
    assert "at 0.4 req/s" in only  # before: "at 0 req/s"
