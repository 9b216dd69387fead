"""`coalmine rollback MODEL` is a transition like the others: through the real control API
and the real controller, its event, its webhook delivery (in the outbox) and its transition
listeners, here the RegistryListener against a real MLflow store, whose `champion` alias
goes back to the version that serves again.

Promotions are driven by the real controller with a scripted judge (the analysis engine
has its own tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coalmine import Client
from coalmine.config import parse_config
from coalmine.registry import ModelVersionRef, RegistryListener, make_registry, prepare_candidate
from coalmine.registry.mlflow_registry import MlflowRegistry
from coalmine.rollout.controller import Controller
from coalmine.rollout.machine import Evidence
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

from .conftest import Store

pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed")

TOKEN = "t0ken"
SPEC = parse_spec(
    {
        "shadow": {"enabled": False},
        "canary": {"steps": [50, 100], "min_duration": 0, "min_samples": 10},
        "webhooks": [{"url": "http://127.0.0.1:9/hook"}],
    }
)


class PassingJudge:
    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        return Evidence(samples=500, must_not_fail=1)

    def forget(self, rollout_id: int) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'coalmine.db'}")
    config = parse_config(
        {"models": [{"name": name, "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                     "routing": {"stable": "v1"}} for name in ("loans", "fraud")]}
    )  # fmt: skip
    RouteRepository(engine).seed_from_config(config)
    yield engine
    engine.dispose()


async def _promote(ctl: Controller, model: str, candidate: str) -> RolloutRecord:
    repo = ctl.repo
    rec = repo.create(model, candidate, "http://127.0.0.1:10", SPEC)
    for _ in range(20):
        if repo.get(rec.id).state.terminal:
            break
        await ctl.tick()
    done = repo.get(rec.id)
    assert done.state.phase.value == "promoted"
    return done


async def test_rollback_moves_the_champion_back_and_is_delivered_as_a_webhook(
    store: Store, engine: Engine, tmp_path: Path
) -> None:
    registry = make_registry("mlflow", tracking_uri=store.uri, cache_dir=tmp_path / "cache")
    assert isinstance(registry, MlflowRegistry)
    est = store.estimators[("iris", "1")]
    first = store.log("loans-reg", est, "cloudpickle")
    second = store.log("loans-reg", est, "cloudpickle")
    one = prepare_candidate(registry, f"models:/loans-reg/{first}", model="loans")
    two = prepare_candidate(registry, f"models:/loans-reg/{second}", model="loans")
    listener = RegistryListener(registry)
    clock = itertools.count(1000.0, 5.0)
    ctl = Controller(engine, PassingJudge(), clock=lambda: next(clock))
    ctl.listeners.append(listener.on_transition)  # what `coalmine serve` does
    try:
        await _promote(ctl, "loans", one.candidate)
        promoted = await _promote(ctl, "loans", two.candidate)
        with control_api(engine, TOKEN, controller=ctl) as url, Client(url, TOKEN) as client:
            done = client.rollback("loans")
            events = client.events(promoted.id)
            deliveries = client.webhook_deliveries(promoted.id)
        listener.close()
    finally:
        listener.close()

    assert (done["stable"], done["replaced"]) == (one.candidate, two.candidate)
    assert RouteRepository(engine).get("loans").stable == one.candidate  # type: ignore[union-attr]
    assert events[-1]["kind"] == "model_rollback"
    # the webhook delivery, committed with the event, one per transition as for the others
    assert [d["seq"] for d in deliveries] == [e["seq"] for e in events[1:]]
    assert '"kind":"model_rollback"' in deliveries[-1]["payload"]
    # the listeners ran: MLflow's champion is the version that serves again
    assert registry.champion("loans-reg") == one.ref
    assert done["seq"] == events[-1]["seq"]
    assert registry.recorded(two.ref) == ("rolled_back", str(promoted.id))
    tags = store.client().get_model_version("loans-reg", second).tags
    assert "manual rollback of loans" in tags["coalmine.reason"]

    # a controller restarting replays missed endings: it must not re-promote the undone one
    RegistryListener(registry).catch_up([r.to_dict() for r in RolloutRepository(engine).recent()])
    assert registry.champion("loans-reg") == one.ref


async def test_rollback_to_a_version_outside_the_registry_takes_the_alias_off(
    store: Store, engine: Engine, tmp_path: Path
) -> None:
    registry = make_registry("mlflow", tracking_uri=store.uri, cache_dir=tmp_path / "cache")
    assert isinstance(registry, MlflowRegistry)
    version = store.log("fraud-reg", store.estimators[("iris", "1")], "cloudpickle")
    cand = prepare_candidate(registry, f"models:/fraud-reg/{version}", model="fraud")
    listener = RegistryListener(registry)
    clock = itertools.count(1000.0, 5.0)
    ctl = Controller(engine, PassingJudge(), clock=lambda: next(clock))
    ctl.listeners.append(listener.on_transition)
    try:
        await _promote(ctl, "fraud", cand.candidate)
        listener.close()
        assert registry.champion("fraud-reg") == ModelVersionRef("fraud-reg", version)
        done = await ctl.rollback_model("fraud")  # v1 came from the config, not the registry
        listener.close()
    finally:
        listener.close()
    assert done.summary()["stable"] == "v1"
    # the alias no longer names a version that serves nothing
    assert registry.champion("fraud-reg") is None
    assert registry.recorded(cand.ref) == ("rolled_back", str(done.after.id))
