"""The batch ingest endpoint over real HTTP (uvicorn on loopback, SQLite file store) and the
SDK call that uses it: rows as the gateway writes them, idempotent retries, 4xx naming the
item and field, the API's token and body bound."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine import Client
from coalmine.client import CoalmineAPIError
from coalmine.collect.items import MAX_ITEMS
from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "ingest-token"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "c.db"
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{db}"},
            "models": [
                {
                    "name": "iris",
                    "versions": [
                        {"name": "v1", "url": "http://127.0.0.1:9"},
                        {"name": "v2", "url": "http://127.0.0.1:10"},
                    ],
                    "routing": {"stable": "v1"},
                }
            ],
        }
    )
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    routes.set_route("iris", canary="v2", canary_weight_bp=2500, rollout_id=7)
    try:
        with control_api(engine, TOKEN, max_body_bytes=256 * 1024) as url:
            yield url, db
    finally:
        engine.dispose()


def _item(rid: str, version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"request_id": rid, "model": "iris", "version": version, "latency_ms": 12.5, **extra}


def _rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM predictions ORDER BY id")]


def test_ingest_writes_the_gateways_rows_with_role_rollout_and_weight_from_the_route(
    setup: tuple[str, Path],
) -> None:
    url, db = setup
    ts = time.time() - 5
    with Client(url, TOKEN) as client:
        done = client.ingest(
            [
                _item(
                    "r1",
                    ts=ts,
                    prediction=[1],
                    scores=[{"0": 0.1, "1": 0.9}],
                    slices={"country": "fr"},
                    input={"instances": [[1, 2]]},
                ),
                _item("r1", "v2", prediction=[2]),
                _item("r2", "v2", status=503),
                _item("r3", "v2", role="shadow", status=0, error_class="timeout"),
            ]
        )
    assert done == {"written": 4, "duplicates": 0}
    rows = _rows(db)
    assert [(r["request_id"], r["version"], r["role"]) for r in rows] == [
        ("r1", "v1", "stable"),
        ("r1", "v2", "canary"),
        ("r2", "v2", "canary"),
        ("r3", "v2", "shadow"),
    ]
    first = rows[0]
    assert first["ts"] == pytest.approx(ts)
    assert first["latency_ms"] == 12.5 and first["status"] == 200
    assert first["error_class"] is None
    assert json.loads(first["prediction"]) == [1]
    assert json.loads(first["scores"]) == [{"0": 0.1, "1": 0.9}]
    assert json.loads(first["slices"]) == {"country": "fr"}
    assert json.loads(first["input"]) == {"instances": [[1, 2]]}  # the default policy: full
    assert {(r["rollout_id"], r["canary_weight_bp"]) for r in rows} == {(7, 2500)}
    assert rows[2]["error_class"] == "http_5xx"
    assert (rows[3]["status"], rows[3]["error_class"]) == (0, "timeout")


def test_a_retried_batch_is_counted_once(setup: tuple[str, Path]) -> None:
    url, db = setup
    batch = [_item(f"r{i}", "v2" if i % 2 else "v1") for i in range(10)]
    with Client(url, TOKEN) as client:
        assert client.ingest(batch, batch_size=4) == {"written": 10, "duplicates": 0}
        # the same calls again (a reporter that never saw the answer), one of them twice
        assert client.ingest(batch + batch[:1]) == {"written": 0, "duplicates": 11}
        # same request id, another role: a different call (the shadow's copy)
        assert client.ingest([_item("r0", "v2", role="shadow")]) == {
            "written": 1,
            "duplicates": 0,
        }
    assert len(_rows(db)) == 11


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        (_item("x", model="nope"), "items.1.model", "unknown model 'nope'"),
        (_item("x", "v9"), "items.1.version", "'v9' is not a version of 'iris'"),
        (_item("x", latency_ms=-1), "items.1.latency_ms", "greater than or equal to 0"),
        (_item("x", status=700), "items.1.status", "less than or equal to 599"),
        (_item("x", role="boss"), "items.1.role", "Input should be"),
        (_item("x", ts=time.time() * 1000), "items.1.ts", "milliseconds given?"),
        (_item("x", slices={"a": {"b": 1}}), "items.1.slices.a", ""),
        (_item("x" * 129), "items.1.request_id", "at most 128"),
        (_item("a b"), "items.1.request_id", "pattern"),
        (
            {k: v for k, v in _item("x").items() if k != "latency_ms"},
            "items.1.latency_ms",
            "required",
        ),
        (_item("x", colour="red"), "items.1.colour", "Extra inputs"),
    ],
)
def test_a_bad_item_refuses_the_batch_naming_the_item_and_field(
    setup: tuple[str, Path], item: dict[str, Any], field: str, reason: str
) -> None:
    url, db = setup
    with Client(url, TOKEN) as client, pytest.raises(CoalmineAPIError) as caught:
        client.ingest([_item("ok"), item])
    assert caught.value.status == 422
    fields = {e["field"]: e["reason"] for e in caught.value.errors}
    assert any(f.startswith(field) and reason in r for f, r in fields.items()), fields
    assert _rows(db) == []  # nothing of the batch was written


def test_a_version_without_a_role_in_the_route_must_say_its_role(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{db}"},
            "models": [
                {
                    "name": "m",
                    "versions": [
                        {"name": "a", "url": "http://127.0.0.1:9"},
                        {"name": "b", "url": "http://127.0.0.1:9"},
                    ],
                    "routing": {"stable": "a"},
                }
            ],
        }
    )
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    item = {"request_id": "r", "model": "m", "version": "b", "latency_ms": 1}
    try:
        with control_api(engine, TOKEN) as url, Client(url, TOKEN) as client:
            with pytest.raises(CoalmineAPIError) as caught:
                client.ingest([item])
            assert caught.value.errors[0]["field"] == "items.0.role"
            assert client.ingest([{**item, "role": "baseline"}])["written"] == 1
    finally:
        engine.dispose()


def test_ingest_needs_the_token_and_bounds_body_and_items(setup: tuple[str, Path]) -> None:
    url, db = setup
    body = {"items": [_item("r1")]}
    with httpx.Client(base_url=url) as http:
        assert http.post("/api/v1/predictions", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert http.post("/api/v1/predictions", json=body, headers=wrong).status_code == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        big = {"items": [_item("r1", input="x" * 300_000)]}
        assert http.post("/api/v1/predictions", json=big, headers=auth).status_code == 413
        many = {"items": [_item(f"r{i}") for i in range(MAX_ITEMS + 1)]}
        r = http.post(
            "/api/v1/predictions",
            content=json.dumps(many, separators=(",", ":")),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "items"
        empty = http.post("/api/v1/predictions", json={"items": []}, headers=auth)
        assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "items"
        broken = http.post("/api/v1/predictions", content=b"{", headers=auth)
        assert broken.status_code == 422
    assert _rows(db) == []
