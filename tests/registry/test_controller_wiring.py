"""The real rollout controller with a RegistryListener among its transition listeners (as
`coalmine serve` wires it), against a real MLflow store.

The judge is scripted (the analysis engine has its own tests): good candidates pass, bad
ones fail; what is under test is the registry write-back on real transitions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from coalmine.config import parse_config
from coalmine.registry import ModelVersionRef, RegistryListener, make_registry, prepare_candidate
from coalmine.registry.mlflow_registry import MlflowRegistry
from coalmine.rollout.controller import Controller
from coalmine.rollout.machine import Evidence
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository

from .conftest import Store

pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed")

SPEC = parse_spec(
    {
        "shadow": {"enabled": False},
        "canary": {"steps": [5, 50, 100], "min_duration": 0, "min_samples": 10},
    }
)
FAILING = "accuracy: -5.0 pts vs stable (CI -7.1..-2.9), FAIL"


class ScriptedJudge:
    def __init__(self, bad: set[str]) -> None:
        self.bad = bad

    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        if record.state.candidate in self.bad:
            return Evidence(failing=(FAILING,), samples=500, must_not_fail=1)
        return Evidence(samples=500, must_not_fail=1)

    def forget(self, rollout_id: int) -> None:
        pass


@pytest.fixture
def engine_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'coalmine.db'}"
    engine = open_engine(url)
    config = parse_config(
        {
            "models": [
                {
                    "name": "loans",
                    "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                    "routing": {"stable": "v1"},
                }
            ]
        }
    )
    RouteRepository(engine).seed_from_config(config)
    engine.dispose()
    yield url


async def test_controller_outcomes_reach_mlflow(
    store: Store, engine_url: str, tmp_path: Path
) -> None:
    registry = make_registry("mlflow", tracking_uri=store.uri, cache_dir=tmp_path / "cache")
    assert isinstance(registry, MlflowRegistry)
    est = store.estimators[("iris", "1")]
    store.log("loans", est, "cloudpickle")
    store.log("loans", est, "cloudpickle")
    good = prepare_candidate(registry, "models:/loans/1", model="loans")
    store.client().set_registered_model_alias("loans", "challenger", "2")
    bad = prepare_candidate(registry, "models:/loans@challenger", model="loans")
    listener = RegistryListener(registry)
    engine = open_engine(engine_url)
    clock = itertools.count(1000.0, 5.0)
    ctl = Controller(engine, ScriptedJudge({bad.candidate}), clock=lambda: next(clock))
    ctl.listeners.append(listener.on_transition)  # what `coalmine serve` does
    repo = RolloutRepository(engine)
    try:
        for cand, url in ((good, "http://127.0.0.1:10"), (bad, "http://127.0.0.1:11")):
            rec = repo.create("loans", cand.candidate, url, SPEC)
            for _ in range(20):
                if repo.get(rec.id).state.terminal:
                    break
                await ctl.tick()
        listener.close()
        first, second = sorted(repo.recent(), key=lambda r: r.id)
        assert first.state.outcome == "promoted" and second.state.outcome == "rolled_back"
        assert registry.champion("loans") == ModelVersionRef("loans", "1")
        assert registry.recorded(good.ref) == ("promoted", str(first.id))
        assert registry.recorded(bad.ref) == ("rolled_back", str(second.id))
        reason = store.client().get_model_version("loans", "2").tags["coalmine.reason"]
        assert FAILING in reason
    finally:
        listener.close()
        engine.dispose()
