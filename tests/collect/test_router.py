"""`coalmine.Router` against a real control API (uvicorn on loopback, SQLite): the gateway's
assignment, a mirror that never reaches the caller, logging through the batch ingest."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import coalmine
from coalmine import Client
from coalmine.config import parse_config
from coalmine.routing.split import bucket_of
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "router-token"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Client, RouteRepository, Path]]:
    db = tmp_path / "c.db"
    config = parse_config({
        "store": {"url": f"sqlite:///{db}"},
        "models": [{"name": "m", "versions": [{"name": "a", "url": "http://127.0.0.1:9"},
                                               {"name": "b", "url": "http://127.0.0.1:9"},
                                               {"name": "c", "url": "http://127.0.0.1:9"}],
                    "routing": {"stable": "a"}}],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    try:
        with control_api(engine, TOKEN) as url, Client(url, TOKEN) as client:
            yield client, routes, db
    finally:
        engine.dispose()


def _rows(db: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT request_id, version, role, status FROM predictions ORDER BY id"
        ).fetchall()


def test_keys_get_the_gateways_buckets_and_every_call_is_logged(api: Any) -> None:
    client, routes, db = api
    salt = routes.set_route("m", canary="b", canary_weight_bp=3000, rollout_id=4).salt
    models = {"a": lambda x: ("a", x), "b": lambda x: ("b", x)}
    with coalmine.Router("m", models, client=client, flush_s=0.05) as router:
        answers = {f"user{i}": router.predict(i, key=f"user{i}") for i in range(200)}
        again = router.predict(0, key="user7")
    for key, answer in answers.items():
        want = "b" if bucket_of(key, salt) < 3000 else "a"
        assert answer.version == want and answer.output[0] == want
    assert again.version == answers["user7"].version  # sticky
    rows = _rows(db)
    assert len(rows) == 201 and router.stats.logged == 201
    assert {(r[1], r[2]) for r in rows} == {("a", "stable"), ("b", "canary")}


def test_the_mirror_never_delays_or_breaks_the_caller(api: Any) -> None:
    client, routes, db = api
    routes.set_route("m", shadow="c", mirror_bp=10_000)
    release = threading.Event()

    def shadow(x: Any) -> Any:
        release.wait(10)
        raise RuntimeError("the shadow is broken")

    models = {"a": lambda x: x, "c": shadow}
    router = coalmine.Router("m", models, client=client, mirror_workers=1, mirror_queue=2,
                             flush_s=0.05)  # fmt: skip
    try:
        answers = [router.predict(i, key=f"u{i}") for i in range(10)]
        assert [a.output for a in answers] == list(range(10))  # answered while it hangs
        assert router.stats.mirror_dropped >= 7  # one in the worker, two queued
    finally:
        release.set()
        router.close()
    rows = _rows(db)
    assert sum(1 for r in rows if r[2] == "stable") == 10
    shadow_rows = [r for r in rows if r[2] == "shadow"]
    assert 1 <= len(shadow_rows) <= 3 and {r[3] for r in shadow_rows} == {500}


def test_a_failing_canary_is_logged_and_stable_answers(api: Any) -> None:
    client, routes, db = api
    routes.set_route("m", canary="b", canary_weight_bp=10_000)

    def broken(x: Any) -> Any:
        raise ValueError("candidate bug")

    with coalmine.Router("m", {"a": lambda x: "ok", "b": broken}, client=client) as router:
        answer = router.predict(1, key="k")
    assert (answer.output, answer.version) == ("ok", "a")
    assert [(r[1], r[2], r[3]) for r in _rows(db)] == [("b", "canary", 500), ("a", "stable", 200)]


def test_the_route_is_refreshed_in_the_background(api: Any) -> None:
    client, routes, _ = api
    with coalmine.Router("m", {"a": str, "b": str}, client=client, refresh_s=0.05) as router:
        assert router.predict(1).version == "a"
        routes.set_route("m", canary="b", canary_weight_bp=10_000)
        deadline = time.monotonic() + 5
        while router.route["canary"] != "b" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert router.predict(1).version == "b"


def test_a_version_without_a_callable_is_refused(api: Any) -> None:
    client, routes, _ = api
    routes.set_route("m", canary="b", canary_weight_bp=10_000)
    router = coalmine.Router("m", {"a": str}, client=client, failover=False)
    with router, pytest.raises(LookupError, match="no callable for version 'b'"):
        router.predict(1)
