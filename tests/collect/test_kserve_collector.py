"""The KServe collector over a real SQLite store: mapping, bodies, unanswered calls."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from coalmine.collect.kserve import KServeCollector
from coalmine.config import CoalmineConfig, parse_config
from coalmine.log.policy import InputPolicy
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.collect.kserve_logger import event_headers


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[KServeCollector, Path, RouteRepository]]:
    db = tmp_path / "c.db"
    config: CoalmineConfig = parse_config({
        "store": {"url": f"sqlite:///{db}"},
        "collect": {"kserve": {"secret": "s" * 16, "pair_timeout_s": 5, "services": [
            {"service": "iris-shadow", "model": "iris", "role": "shadow"}]}},
        "models": [{
            "name": "iris",
            "versions": [{"name": "v1", "url": "http://127.0.0.1:9"},
                         {"name": "v2", "url": "http://127.0.0.1:9"}],
            "routing": {"stable": "v1"},
            "slices": [{"name": "country", "header": "X-Country"},
                       {"name": "first", "json_field": "inputs.0.data.0"}],
        }],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    collector = KServeCollector(
        engine, config.collect.kserve, {m.name: m for m in config.models},
        InputPolicy(config.logging),
    )  # fmt: skip
    try:
        yield collector, db, routes
    finally:
        engine.dispose()


def _send(collector: KServeCollector, kind: str, call: str, ts: float, body: Any,
          now: float, **attrs: Any) -> int:  # fmt: skip
    headers = CIMultiDict(event_headers(kind, call, attrs.pop("service", "iris"), ts, **attrs))
    return collector.handle(headers, json.dumps(body).encode(), now).status


def _rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM predictions ORDER BY id")]


def test_a_v2_call_becomes_the_gateways_row(setup: Any) -> None:
    collector, db, routes = setup
    routes.set_route("iris", canary="v2", canary_weight_bp=1000, rollout_id=3)
    request = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [5, 1]}]}
    answer = {"outputs": [
        {"name": "predict", "shape": [1], "datatype": "INT64", "data": [2]},
        {"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "data": [0.3, 0.7],
         "parameters": {"classes": ["a", "b"]}},
    ]}  # fmt: skip
    meta = {"X-Request-Id": ["rid-1"], "X-Country": ["fr"]}
    assert _send(collector, "response", "c1", 100.25, answer, 1.0, endpoint="canary",
                 metadata=meta) == 200  # fmt: skip
    assert _rows(db) == []  # waits for its request
    _send(collector, "request", "c1", 100.0, request, 1.1, endpoint="canary", metadata=meta)
    (row,) = _rows(db)
    assert (row["request_id"], row["version"], row["role"]) == ("rid-1", "v2", "canary")
    assert (row["status"], row["rollout_id"], row["canary_weight_bp"]) == (200, 3, 1000)
    assert row["latency_ms"] == pytest.approx(250.0, abs=0.01)  # from the events' ce-time
    assert row["ts"] == pytest.approx(100.0)
    assert json.loads(row["prediction"]) == [2]
    assert json.loads(row["scores"]) == [{"a": 0.3, "b": 0.7}]
    assert json.loads(row["slices"]) == {"country": "fr", "first": 5}
    assert json.loads(row["input"]) == request


def test_shadow_service_maps_to_the_routes_shadow_and_ce_id_is_the_fallback_id(
    setup: Any,
) -> None:
    collector, db, routes = setup
    routes.set_route("iris", shadow="v2", mirror_bp=10_000)
    for service in ("iris", "iris-shadow"):
        _send(collector, "request", "same", 10.0, {"instances": [[1, 2]]}, 1.0, service=service)
        _send(collector, "response", "same", 10.1, {"predictions": [1]}, 1.0, service=service)
    rows = _rows(db)
    assert [(r["request_id"], r["version"], r["role"]) for r in rows] == [
        ("same", "v1", "stable"), ("same", "v2", "shadow"),
    ]  # fmt: skip


def test_unanswered_calls_are_logged_without_an_answer_and_strays_are_counted(
    setup: Any,
) -> None:
    collector, db, _ = setup
    _send(collector, "request", "lost", 10.0, {"instances": [[1]]}, now=1.0)
    # a canary call while Coalmine's route has no canary: nothing to attribute it to
    _send(collector, "request", "c", 10.0, {}, 2.0, endpoint="canary")
    _send(collector, "response", "c", 10.0, {}, 2.0, endpoint="canary")
    assert _send(collector, "request", "t", 10.0, {}, 2.0, component="transformer") == 200
    assert _rows(db) == []
    _send(collector, "request", "later", 20.0, {}, now=7.0)  # 6 s later: "lost" expired
    (row,) = _rows(db)
    assert (row["request_id"], row["status"], row["error_class"]) == ("lost", 0, None)
    assert row["latency_ms"] == pytest.approx(6000.0)
    assert collector.pairer.expired_requests == 1


def test_a_repeated_call_is_written_once(setup: Any) -> None:
    collector, db, _ = setup
    for now in (1.0, 2.0):  # the logger retried both events of one call
        _send(collector, "request", "c", 10.0, {}, now)
        _send(collector, "response", "c", 10.1, {"predictions": [0]}, now)
    assert len(_rows(db)) == 1


def test_a_malformed_event_is_a_400_naming_the_attribute(setup: Any) -> None:
    collector, _, _ = setup
    headers = CIMultiDict(event_headers("request", "c", "iris", 1.0))
    headers["Ce-Type"] = "nope"
    answer = collector.handle(headers, b"{}", 1.0)
    assert answer.status == 400 and answer.body["errors"][0]["field"] == "ce-type"
