"""The power floor of not_fail canary criteria: a step advances only once its confidence
sequence rules out a regression larger than the step's floor (wide at 1%, tight at 50%).

The issue's case: a candidate 22 points less accurate must not advance a 1% step on 50
labelled samples (before the floor it did, as "nothing failed"). Simulated with fixed seeds
through the same pure pieces the controller uses (Analysis, floor.schedule, floor_check),
and once live through EngineJudge over a real SQLite log and the state machine.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import beta
from sqlalchemy import insert

from coalmine.analysis.analysis import Analysis
from coalmine.config import ConfigError, parse_config
from coalmine.log.record import PredictionRecord
from coalmine.rollout.floor import floor_check, schedule
from coalmine.rollout.judge import EngineJudge, build_criteria
from coalmine.rollout.machine import Evidence, Phase, RolloutState, Tick, step
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import feedback

ALPHA = 0.05
SPEC = parse_spec({"shadow": {"enabled": False},
                   "canary": {"steps": [1, 5, 25, 50, 100], "min_duration": 0, "min_samples": 10,
                              "criteria": [{"metric": "accuracy"}, {"metric": "error_rate"},
                                           {"metric": "latency_p95", "max_ratio": 1.2},
                                           {"metric": "latency_mean"}]}})  # fmt: skip


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    return 1.0 if k == n else float(beta.ppf(level, k + 1, n - k))


def test_the_default_schedule_is_wide_at_one_percent_and_tight_at_fifty() -> None:
    floors = schedule(SPEC, build_criteria(SPEC, "canary"))
    acc = floors["accuracy"]
    assert acc[0] == pytest.approx(0.01 + 0.20) and acc[4] is None  # 100%: nothing to compare
    assert acc[3] == pytest.approx(0.01 + 0.20 / 50**0.5)
    assert list(acc[:4]) == sorted(acc[:4], reverse=True)
    assert floors["error_rate"][0] == pytest.approx(0.005 + 0.20)
    assert floors["latency_mean"][3] == pytest.approx(1.2 + 0.20 / 50**0.5)  # a ratio
    assert "latency_p95" not in floors  # its bound is infinite early: no default floor


def test_the_spec_overrides_the_schedule_and_checks_it() -> None:
    spec = parse_spec({"canary": {"steps": [1, 50, 100], "criteria": [
        {"metric": "accuracy", "rule_out": [0.3, 0.05, None]},
        {"metric": "error_rate", "rule_out": 0.02},
        {"metric": "latency_mean", "rule_out": []},
    ]}})  # fmt: skip
    floors = schedule(spec, build_criteria(spec, "canary"))
    assert floors == {"accuracy": (0.3, 0.05, None), "error_rate": (0.02, 0.02, None)}
    for bad, words in [
        ({"canary": {"steps": [1, 100], "criteria": [{"metric": "accuracy", "rule_out": [0.1]}]}},
         "1 entries for 2 steps"),
        ({"canary": {"criteria": [{"metric": "accuracy", "rule_out": -1}]}}, "must be > 0"),
        ({"shadow": {"criteria": [{"metric": "accuracy", "rule_out": 0.1}]}}, "the canary"),
        ({"canary": {"criteria": [{"metric": "accuracy", "must": "pass", "rule_out": 0.1}]}},
         "not_fail"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse_spec(bad)


def test_events_say_what_an_advance_rests_on() -> None:
    state = RolloutState(id=1, model="m", candidate="v2", previous_stable="v1", spec=SPEC,
                         phase=Phase.CANARY, started_at=0, step_started_at=0,
                         canary_weight_bp=100)  # fmt: skip
    ev = Evidence(samples=500, must_not_fail=2,
                  ruled_out=("accuracy: no regression larger than 21 points",))  # fmt: skip
    t = step(state, Tick(ev), now=40)
    assert t.kind == "advance"
    assert "advanced: accuracy: no regression larger than 21 points; 1 more not failing" in t.reason
    assert "passed" not in t.reason
    passed = step(state, Tick(Evidence(samples=500, must_pass=1)), now=40)
    assert "passed (1 must-pass PASS)" in passed.reason


def _looks(p_cand: float, seed: int, max_n: int, per_look: int = 10) -> tuple[str, int]:
    """A 1% canary fed `per_look` labelled candidate samples per look (production 99×)."""
    rng = np.random.default_rng(seed)
    criteria = build_criteria(SPEC, "canary")[:1]  # accuracy, margin 1 point, not_fail
    floor = schedule(SPEC, criteria)["accuracy"][0]
    analysis = Analysis(criteria, mode="canary", alpha=ALPHA, max_slices=0)
    n = 0
    while n < max_n:
        for arm, k, p in (("candidate", per_look, p_cand), ("baseline", 99 * per_look, 0.9)):
            right = rng.random(k) < p
            analysis.add_batch(arm, predictions=[1] * k, labels=[int(r) for r in right],
                               steps=[100] * k)  # fmt: skip
        n += per_look
        result = analysis.judge().overall()[0]
        if result.verdict.value == "FAIL":
            return "fail", n
        if floor_check(result, criteria[0], floor)[0]:
            return "advance", n
    return "wait", n


def test_a_candidate_22_points_worse_never_advances_a_one_percent_step_on_50_samples() -> None:
    outcomes = [_looks(0.68, seed, max_n=50)[0] for seed in range(60)]
    advanced = outcomes.count("advance")
    assert cp_upper(advanced, len(outcomes)) <= ALPHA, outcomes


def test_a_good_candidate_still_advances_a_one_percent_step_soon() -> None:
    runs = [_looks(0.9, 1000 + seed, max_n=400) for seed in range(10)]
    assert all(kind == "advance" for kind, _ in runs), runs
    assert float(np.median([n for _, n in runs])) <= 200


@pytest.mark.slow
def test_at_the_floor_itself_advancing_stays_below_alpha_over_every_look() -> None:
    # 21 points worse = exactly the 1% floor (margin 1 + 20): a false advance is ≤ α
    outcomes = [_looks(0.69, 5000 + seed, max_n=400)[0] for seed in range(100)]
    assert cp_upper(outcomes.count("advance"), len(outcomes)) <= ALPHA, outcomes


# -- live: EngineJudge over a real log, decided by the machine ------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    config = parse_config({
        "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "models": [{"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                    "routing": {"stable": "v1"}}],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    yield engine
    engine.dispose()


def _canary(store: Any, candidate_accuracy: float, n_candidate: int, seed: int) -> Any:
    spec = parse_spec({"shadow": {"enabled": False},
                       "canary": {"steps": [1, 100], "min_duration": 0, "min_samples": 10,
                                  "criteria": [{"metric": "accuracy"}]}})  # fmt: skip
    now = time.time()
    record = RolloutRepository(store).create("m", "v2", "http://127.0.0.1:9", spec, now=now - 9)
    state = dataclasses.replace(record.state, phase=Phase.CANARY, canary_weight_bp=100,
                                step_started_at=now - 9)  # fmt: skip
    record = dataclasses.replace(record, state=state)
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(100 * n_candidate):
        canary = i % 100 == 0
        right = rng.random() < (candidate_accuracy if canary else 0.9)
        rows.append(PredictionRecord(
            request_id=f"r{i}", model="m", version="v2" if canary else "v1",
            role="canary" if canary else "stable", ts=now - 8 + i * 1e-4, latency_ms=10.0,
            status=200, prediction=1 if right else 0, canary_weight_bp=100,
            rollout_id=record.id,
        ))  # fmt: skip
        labels.append({"request_id": f"r{i}", "label": "1", "outcomes": None, "ts": now})
    insert_batch(store, rows)
    with store.begin() as conn:
        conn.execute(insert(feedback), labels)
    return record, now


def test_live_a_22_point_worse_canary_does_not_advance_on_50_samples(store: Any) -> None:
    record, now = _canary(store, 0.68, 50, seed=3)
    ev = EngineJudge(store).evaluate(record, now)
    t = step(record.state, Tick(ev), now)
    assert t.kind != "advance", t.reason  # before the floor: advanced, "nothing failed"
    if t.kind == "none":  # not yet failed: held, saying what it could not rule out
        assert "cannot yet rule out a regression larger than 21 points" in t.reason


def test_live_a_good_canary_advances_saying_what_it_ruled_out(store: Any) -> None:
    record, now = _canary(store, 0.9, 250, seed=4)
    ev = EngineJudge(store).evaluate(record, now)
    t = step(record.state, Tick(ev), now)
    assert t.kind == "promote" or t.kind == "advance", t.reason
    assert "advanced: accuracy: no regression larger than 21 points" in t.reason
