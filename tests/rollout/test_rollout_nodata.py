"""No data is never "nothing failed": a criterion judged on no data holds the step.

The rule (analysis/nodata.py) is tested with literal inputs; the hold through the real
analysis engine over a real SQLite prediction log, read by the controller's EngineJudge and
decided by the pure state machine.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from coalmine.analysis.criteria import Criterion
from coalmine.analysis.nodata import SourceFacts, lacks_data, needs_labels, source_problem
from coalmine.config import parse_config
from coalmine.log.record import PredictionRecord
from coalmine.rollout.judge import EngineJudge
from coalmine.rollout.machine import Evidence, Phase, Tick, step
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import feedback

# -- the rule, with literal inputs ----------------------------------------------------------


def test_which_criteria_need_labels() -> None:
    assert needs_labels(Criterion(metric="accuracy"))
    assert needs_labels(Criterion(metric="auc"))
    assert not needs_labels(Criterion(metric="error_rate"))
    assert not needs_labels(Criterion(metric="latency_p95"))
    assert not needs_labels(Criterion(metric="outcome:clicked", margin=0.1))


def test_sources_refuse_what_cannot_get_data_and_warn_about_what_has_not_arrived() -> None:
    none = SourceFacts()
    cpu = source_problem(Criterion(metric="cpu"), none)
    assert cpu is not None and cpu.action == "refuse" and "CPU/memory source" in cpu.reason
    assert source_problem(Criterion(metric="cpu"), SourceFacts(resources=True)) is None
    auc = source_problem(Criterion(metric="auc"), SourceFacts(labels=True))
    assert auc is not None and auc.action == "warn" and "scores" in auc.reason
    assert source_problem(Criterion(metric="auc"), SourceFacts(labels=True, scores=True)) is None
    clicked = Criterion(metric="outcome:clicked", margin=0.1)
    problem = source_problem(clicked, SourceFacts(outcomes=frozenset({"bought"})))
    assert problem is not None and problem.action == "warn" and "'clicked'" in problem.reason
    assert source_problem(clicked, SourceFacts(outcomes=frozenset({"clicked"}))) is None
    acc = source_problem(Criterion(metric="accuracy"), none)
    assert acc is not None and acc.action == "warn" and "labelled feedback" in acc.reason
    assert source_problem(Criterion(metric="error_rate"), none) is None


def test_lacks_data_needs_both_arms_for_a_comparison_and_the_candidate_for_a_limit() -> None:
    acc = Criterion(metric="accuracy")
    assert lacks_data({"n_candidate": 0, "n_baseline": 500}, acc) is not None
    assert "production" in (lacks_data({"n_candidate": 5, "n_baseline": 0}, acc) or "")
    assert lacks_data({"n_candidate": 5, "n_baseline": 9}, acc) is None
    limit = Criterion(metric="latency_p95", max=300)
    assert lacks_data({"n_candidate": 5, "n_baseline": 0}, limit) is None


def test_a_step_with_a_criterion_without_data_holds_then_ends_per_on_inconclusive() -> None:
    spec = parse_spec({"shadow": {"enabled": False},
                       "canary": {"steps": [10, 100], "min_duration": 1, "max_duration": 60,
                                  "min_samples": 5, "on_inconclusive": "hold"}})  # fmt: skip
    from coalmine.rollout.machine import RolloutState

    state = RolloutState(
        id=1, model="m", candidate="v2", previous_stable="v1", spec=spec, phase=Phase.CANARY,
        started_at=0.0, step_started_at=0.0, canary_weight_bp=1000,
    )  # fmt: skip
    ev = Evidence(samples=100, must_not_fail=2, no_data=("accuracy: no candidate data yet",))
    waiting = step(state, Tick(ev), now=10.0)
    assert not waiting.changed and "accuracy: no candidate data yet" in waiting.reason
    ended = step(state, Tick(ev), now=61.0)
    assert ended.kind == "hold" and "accuracy: no candidate data yet" in ended.reason
    fail_spec = spec.model_copy(
        update={"canary": spec.canary.model_copy(update={"on_inconclusive": "fail"})}
    )
    rolled = step(dataclasses.replace(state, spec=fail_spec), Tick(ev), now=61.0)
    assert rolled.kind == "rollback" and "accuracy" in rolled.reason
    # with data, the same evidence advances
    assert step(state, Tick(dataclasses.replace(ev, no_data=())), now=10.0).kind == "advance"


# -- through the real engine over a real log --------------------------------------------------


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


def test_an_unlabelled_not_fail_criterion_holds_a_live_canary_step(store: Any) -> None:
    """Before: accuracy (must: not_fail) on zero labels never FAILs, so the step advanced."""
    # no power floor here (`rule_out: []`): this test is about data, not its amount
    criteria = [{"metric": "error_rate", "rule_out": []},
                {"metric": "outcome:clicked", "margin": 0.1},
                {"metric": "accuracy", "must": "not_fail", "rule_out": []}]  # fmt: skip
    spec = parse_spec({"shadow": {"enabled": False},
                       "canary": {"steps": [10, 100], "min_duration": 0, "min_samples": 10,
                                  "criteria": criteria}})  # fmt: skip
    now = time.time()
    repo = RolloutRepository(store)
    record = repo.create("m", "v2", "http://127.0.0.1:9", spec, now=now - 5)
    state = dataclasses.replace(
        record.state, phase=Phase.CANARY, canary_weight_bp=1000, step_started_at=now - 5
    )
    record = dataclasses.replace(record, state=state)
    rows = [
        PredictionRecord(
            request_id=f"r{i}", model="m", version="v2" if i % 2 else "v1",
            role="canary" if i % 2 else "stable", ts=now - 4 + i * 0.01, latency_ms=10.0,
            status=200, prediction=1, canary_weight_bp=1000, rollout_id=record.id,
        )
        for i in range(200)
    ]  # fmt: skip
    insert_batch(store, rows)
    judge = EngineJudge(store)
    ev = judge.evaluate(record, now)
    assert sorted(ev.no_data) == [
        "accuracy: no candidate data yet (from feedback labels)",
        "outcome:clicked: no candidate data yet (from the outcome 'clicked' in feedback)",
    ]
    assert not ev.failing
    assert ev.judgement is not None and ev.judgement["no_data"] == list(ev.no_data)
    held = step(state, Tick(ev), now)
    assert not held.changed and "accuracy: no candidate data yet" in held.reason

    # labels (with the outcome) arrive for both arms: the step advances on not_fail
    with store.begin() as conn:
        conn.execute(insert(feedback), [
            {"request_id": f"r{i}", "label": "1", "outcomes": json.dumps({"clicked": 1}),
             "ts": now}
            for i in range(200)
        ])  # fmt: skip
    ev = judge.evaluate(record, now + 1)
    assert ev.no_data == ()
    assert step(state, Tick(ev), now + 1).kind == "advance"
