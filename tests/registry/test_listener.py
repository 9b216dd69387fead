"""RegistryListener on the controller's real transition payloads, against a real MLflow store.

Rollouts run through the real rollout store (SQLite file) and pure machine; every transition
becomes the payload `transition_payload` builds for webhooks, which is what the controller
hands the listener.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from coalmine.config import parse_config
from coalmine.registry import (
    ModelVersionRef,
    RegistryListener,
    make_registry,
    prepare_candidate,
)
from coalmine.registry.mlflow_registry import MlflowRegistry
from coalmine.rollout import machine
from coalmine.rollout.controller import transition_payload
from coalmine.rollout.machine import Event, GuardTrip, Promote, Tick
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository

from .conftest import Store

pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed")

SPEC = parse_spec({"shadow": {"enabled": False}, "canary": {"steps": [10, 100], "min_duration": 0}})


@pytest.fixture(scope="module")
def registry(store: Store, tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    reg = make_registry("mlflow", tracking_uri=store.uri, cache_dir=tmp_path_factory.mktemp("c"))
    assert isinstance(reg, MlflowRegistry)
    return reg


@pytest.fixture
def rollouts(tmp_path: Path) -> Iterator[RolloutRepository]:
    engine = open_engine(f"sqlite:///{tmp_path / 'coalmine.db'}")
    config = parse_config(
        {
            "models": [
                {
                    "name": "churn-prod",
                    "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                    "routing": {"stable": "v1"},
                }
            ]
        }
    )
    RouteRepository(engine).seed_from_config(config)
    yield RolloutRepository(engine)
    engine.dispose()


def _run(
    repo: RolloutRepository, candidate: str, events: list[Event], start: float = 1.0
) -> list[dict[str, Any]]:
    """Start a rollout and apply `events`, then tick until it ends; every payload."""
    record = repo.create("churn-prod", candidate, "http://127.0.0.1:10", SPEC, now=start)
    payloads = []
    now = start + 1.0
    queue = list(events)
    while not record.state.terminal:
        event = queue.pop(0) if queue else Tick()
        t = machine.step(record.state, event, now)
        if t.changed:
            after = repo.apply(record, t, now=now)
            assert after is not None
            payloads.append(transition_payload(record, after, t))
            record = after
        now += 1.0
    return payloads


def _metric(result: str) -> float:
    value = REGISTRY.get_sample_value("coalmine_registry_updates_total", {"result": result})
    return value or 0.0


def test_promotion_and_rollback_reach_the_registry(
    registry: MlflowRegistry, store: Store, rollouts: RolloutRepository
) -> None:
    est = store.estimators[("iris", "1")]
    store.log("attrition", est, "cloudpickle")
    store.log("attrition", est, "cloudpickle")
    good = prepare_candidate(registry, "models:/attrition/1", model="churn-prod")
    bad = prepare_candidate(registry, "models:/attrition/2", model="churn-prod")
    listener = RegistryListener(registry)

    promoted = _run(rollouts, good.candidate, [Tick(), Promote("promoted by the pipeline")])
    assert [p["to_phase"] for p in promoted] == ["canary", "promoting", "promoted"]
    # only the ending acts; every other transition is ignored
    assert [listener.apply(p) for p in promoted] == [None, None, good.ref]
    assert registry.champion("attrition") == ModelVersionRef("attrition", "1")
    tags = store.client().get_model_version("attrition", "1").tags
    assert tags["coalmine.outcome"] == "promoted"
    assert tags["coalmine.rollout_id"] == str(promoted[-1]["rollout_id"])
    assert tags["coalmine.reason"] == promoted[-1]["reason"]

    failed = _run(rollouts, bad.candidate, [Tick(), GuardTrip("12 consecutive 5xx")])
    assert failed[-1]["to_phase"] == "rolled_back"
    # the controller's path: non-blocking, delivered by the worker thread
    for p in failed:
        listener.on_transition(p)
    listener.close()
    tags = store.client().get_model_version("attrition", "2").tags
    assert tags["coalmine.outcome"] == "rolled_back"
    assert "12 consecutive 5xx" in tags["coalmine.reason"]
    assert tags["coalmine.rollout_id"] == str(failed[-1]["rollout_id"])
    assert registry.champion("attrition") == ModelVersionRef("attrition", "1")  # alias untouched

    # replaying an ending (a retry, a webhook redelivery) changes nothing
    assert listener.apply(promoted[-1]) == good.ref
    assert registry.champion("attrition") == ModelVersionRef("attrition", "1")


def test_rollouts_not_from_the_registry_are_ignored(
    registry: MlflowRegistry, rollouts: RolloutRepository
) -> None:
    before = _metric("not_linked")
    payloads = _run(rollouts, "v2-handmade", [Tick(), Promote()])
    listener = RegistryListener(registry)
    assert [listener.apply(p) for p in payloads] == [None, None, None]
    assert _metric("not_linked") == before + 1


class FlakyRegistry:
    """The real registry behind a connection that fails the first `failures` writes."""

    def __init__(self, inner: MlflowRegistry, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_rolled_back(self, version: ModelVersionRef, rollout_id: int, reason: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("registry unreachable")
        self.inner.on_rolled_back(version, rollout_id, reason)


def test_a_failing_registry_is_retried_and_never_raises(
    registry: MlflowRegistry, store: Store, rollouts: RolloutRepository
) -> None:
    v = store.log("attrition-flaky", store.estimators[("iris", "1")], "cloudpickle")
    cand = prepare_candidate(registry, f"models:/attrition-flaky/{v}", model="churn-prod")
    payloads = _run(rollouts, cand.candidate, [Tick(), GuardTrip("5xx")])

    flaky = FlakyRegistry(registry, failures=2)
    listener = RegistryListener(flaky, attempts=3, backoff_s=0.01)  # type: ignore[arg-type]
    for p in payloads:
        listener.on_transition(p)  # never raises, never blocks on the registry
    listener.close()
    assert flaky.calls == 3
    assert store.client().get_model_version("attrition-flaky", v).tags["coalmine.outcome"] == (
        "rolled_back"
    )

    failed_before = _metric("failed")
    down = FlakyRegistry(registry, failures=10)
    listener = RegistryListener(down, attempts=2, backoff_s=0.01)  # type: ignore[arg-type]
    listener.on_transition(payloads[-1])
    listener.close()
    assert down.calls == 2 and _metric("failed") == failed_before + 1


def test_catch_up_writes_endings_lost_in_a_crash_once(
    registry: MlflowRegistry, store: Store, rollouts: RolloutRepository
) -> None:
    est = store.estimators[("iris", "2")]
    for _ in range(3):
        store.log("retention", est, "cloudpickle")
    cands = [
        prepare_candidate(registry, f"models:/retention/{v}", model="churn-prod")
        for v in ("1", "2", "3")
    ]
    # three rollouts end while no listener delivers anything (the controller died)
    _run(rollouts, cands[0].candidate, [Tick(), Promote()], start=10.0)
    _run(rollouts, cands[1].candidate, [Tick(), Promote()], start=20.0)
    _run(rollouts, cands[2].candidate, [Tick(), GuardTrip("12 consecutive 5xx")], start=30.0)
    _run(rollouts, "v9-handmade", [Tick(), GuardTrip("5xx")], start=40.0)
    listener = RegistryListener(registry)

    rows = [r.to_dict() for r in rollouts.recent()]
    assert listener.catch_up(rows) == [cands[1].ref, cands[2].ref]
    # the older promotion is superseded: it never takes the champion alias back
    assert registry.champion("retention") == cands[1].ref
    assert registry.recorded(cands[0].ref) is None
    ids = {r["candidate"]: str(r["id"]) for r in rows}
    assert registry.recorded(cands[1].ref) == ("promoted", ids[cands[1].candidate])
    assert registry.recorded(cands[2].ref) == ("rolled_back", ids[cands[2].candidate])
    assert listener.catch_up(rows) == []  # already recorded: nothing written twice
