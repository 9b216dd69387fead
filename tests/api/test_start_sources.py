"""At start every criterion's data source is checked (the rule in analysis/nodata.py):
the real control API refuses what can never get data (422 naming the criterion) and warns
about data not seen yet for this model, from a real SQLite log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert

from coalmine.config import parse_config
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import feedback
from tests.control_api import control_api

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _engine(tmp_path: Path) -> Engine:
    config = parse_config({
        "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
        "models": [{"name": name, "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                    "routing": {"stable": "v1"}} for name in ("iris", "other")],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    return engine


def _log(engine: Engine, model: str, n: int, prediction: Any, fb: dict[str, Any] | None,
         scores: Any = None) -> None:  # fmt: skip
    now = time.time()
    insert_batch(engine, [
        PredictionRecord(request_id=f"{model}-{i}", model=model, version="v1", role="stable",
                         ts=now - n + i, latency_ms=5.0, status=200, prediction=prediction,
                         scores=scores)
        for i in range(n)
    ])  # fmt: skip
    if fb is not None:
        with engine.begin() as conn:
            conn.execute(insert(feedback), [
                {"request_id": f"{model}-{i}", "ts": now,
                 "label": json.dumps(fb.get("label")), "outcomes": json.dumps(fb.get("outcomes"))}
                for i in range(n)
            ])  # fmt: skip


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = _engine(tmp_path)
    yield e
    e.dispose()


def _start(url: str, criteria: list[dict[str, Any]]) -> httpx.Response:
    body = {"model": "iris", "candidate": "v2", "url": "http://127.0.0.1:9",
            "spec": {"shadow": {"enabled": False}, "canary": {"criteria": criteria}}}  # fmt: skip
    return httpx.post(f"{url}/api/v1/rollouts", json=body, headers=AUTH)


def test_cpu_without_a_resource_source_is_refused_naming_the_criterion(engine: Engine) -> None:
    with control_api(engine, TOKEN) as url:
        answer = _start(url, [{"metric": "error_rate"}, {"metric": "cpu"}])
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["field"] == "spec.canary.criteria.1"
    assert "cpu" in error["reason"] and "no CPU/memory source" in error["reason"]


def test_cpu_with_a_resource_source_is_accepted(engine: Engine) -> None:
    with control_api(engine, TOKEN, resources=lambda model: model == "iris") as url:
        answer = _start(url, [{"metric": "error_rate"}, {"metric": "memory"}])
    assert answer.status_code == 201, answer.text


def test_unseen_sources_are_warnings_and_this_models_feedback_only_counts(engine: Engine) -> None:
    # another model has labels and a 'clicked' outcome; iris has only unlabelled calls
    _log(engine, "other", 50, {"label": 1, "probabilities": [0.2, 0.8]},
         {"label": 1, "outcomes": {"clicked": 1}})  # fmt: skip
    _log(engine, "iris", 50, 1, None)
    criteria = [{"metric": "accuracy"}, {"metric": "auc"},
                {"metric": "outcome:clicked", "margin": 0.1}, {"metric": "error_rate"}]  # fmt: skip
    with control_api(engine, TOKEN) as url:
        answer = _start(url, criteria)
        assert answer.status_code == 201, answer.text
        warnings = answer.json()["warnings"]
        assert any(w.startswith("canary: accuracy: no labelled feedback") for w in warnings)
        assert any(w.startswith("canary: auc: no labelled feedback") for w in warnings)
        assert any(w.startswith("canary: outcome:clicked: no feedback") for w in warnings)
        assert not any(w.startswith("canary: error_rate") for w in warnings)
        rid = answer.json()["id"]
        httpx.post(f"{url}/api/v1/rollouts/{rid}/abort", headers=AUTH).raise_for_status()

        # once iris itself has labels, outcomes and scores logged (the log's scores
        # column, as the gateway writes it), nothing is said
        _log(engine, "iris", 50, 1, {"label": 0, "outcomes": {"clicked": 0}},
             scores=[0.3, 0.7])  # fmt: skip
        answer = _start(url, criteria)
    assert answer.status_code == 201, answer.text
    assert not any("no labelled" in w or "outcome" in w or "scores" in w
                   for w in answer.json()["warnings"])  # fmt: skip
