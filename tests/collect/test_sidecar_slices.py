"""The logging sidecar's rows carry the slices and input the gateway logs for the same
request: a real model server on loopback, the real sidecar app reporting to the real control
API (SQLite store), and the real gateway over its own store for comparison."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from coalmine.client import Client
from coalmine.collect.reporter import Reporter
from coalmine.collect.sidecar import Sidecar
from coalmine.config import CoalmineConfig, parse_config
from coalmine.rollout.controller import Controller
from coalmine.rollout.judge import EngineJudge
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import predictions
from tests.control_api import control_api
from tests.gateway.conftest import StartGateway, Upstream, serve_app, start_gateway

__all__ = ["start_gateway"]  # the gateway tests' fixture

TOKEN = "sidecar-slices-token"
PATH = "/v1/models/m:predict"
BODY = {"instances": [{"user_id": "u-1", "features": [0.1, 0.2], "device": "ios"}]}
HEADERS = {"X-Region": "eu", "X-Request-Id": "r-1", "Content-Type": "application/json"}


def _config(db: Path, url: str) -> CoalmineConfig:
    return parse_config({
        "gateway": {"port": 0, "routing_poll_s": 0.1, "fast_guard_failures": 0},
        "logging": {"flush_interval_s": 0.05, "inputs": "redacted", "redact_fields": ["user_id"]},
        "store": {"url": f"sqlite:///{db}"},
        "models": [{
            "name": "m", "versions": [{"name": "v1", "url": url}], "routing": {"stable": "v1"},
            "slices": [{"name": "device", "json_field": "instances.0.device"},
                       {"name": "region", "header": "X-Region"}],
        }],
    })  # fmt: skip


@pytest.fixture
def server() -> None:
    return None  # the gateway's data-plane server as the config says


@contextmanager
def _api(config: CoalmineConfig) -> Iterator[tuple[str, Engine]]:
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    controller = Controller(engine, EngineJudge(engine))
    try:
        with control_api(engine, TOKEN, controller, config=config) as url:
            yield url, engine
    finally:
        engine.dispose()


def _rows(engine: Engine, n: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            rows = list(conn.execute(select(predictions).order_by(predictions.c.request_id)))
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


async def _sidecar(
    upstream: str, api: str, flush_s: float = 0.05, **options: Any
) -> tuple[Sidecar, Any, str]:
    reporter = Reporter(Client(api, TOKEN), flush_s=flush_s)
    sidecar = Sidecar(upstream, "m", "v1", reporter, refresh_s=0.1, **options)
    runner, url = await serve_app(sidecar.app())
    deadline = time.monotonic() + 10
    while sidecar.route is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # the first route: the role and the slice headers
    return sidecar, runner, url


async def test_a_sidecar_row_has_the_gateways_slices_and_redacted_input(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    model = Upstream("v1")
    await model.start()
    try:
        gw = await start_gateway(_config(tmp_path / "gw.db", model.url))
        status, _, _ = await gw.post(PATH, BODY, HEADERS)
        assert status == 200
        await gw.stop()
        (logged,) = gw.rows()
        with _api(_config(tmp_path / "api.db", model.url)) as (api, engine):
            sidecar, runner, url = await _sidecar(model.url, api)
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    answer = await http.post(url + PATH, json=BODY, headers=HEADERS)
                    assert answer.status_code == 200
                    # a body that is not JSON still lands its row: no JSON slice, input hashed
                    bad = await http.post(url + PATH, content=b"{not json", headers={
                        **HEADERS, "X-Request-Id": "r-2"})  # fmt: skip
                    assert bad.status_code == 400
                await asyncio.to_thread(sidecar.reporter.flush)
                rows = await asyncio.to_thread(_rows, engine, 2)
            finally:
                await runner.cleanup()
    finally:
        await model.stop()
    assert [r.request_id for r in rows] == ["r-1", "r-2"]
    assert json.loads(logged.slices) == {"device": "ios", "region": "eu"}
    assert "u-1" not in logged.input and '"[redacted]"' in logged.input
    assert (rows[0].slices, rows[0].input) == (logged.slices, logged.input)
    assert json.loads(rows[1].slices) == {"device": None, "region": "eu"}
    assert rows[1].input is not None and len(rows[1].input) == 64  # the raw body's digest


async def test_an_over_bound_body_lands_its_row_without_input(tmp_path: Path) -> None:
    model = Upstream("v1")
    await model.start()
    large = {"instances": [{**BODY["instances"][0], "pad": "x" * 4096}]}
    try:
        with _api(_config(tmp_path / "api.db", model.url)) as (api, engine):
            sidecar, runner, url = await _sidecar(model.url, api, max_report_body=1024)
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    for rid, body in (("r-1", BODY), ("r-2", large)):
                        answer = await http.post(
                            url + PATH, json=body, headers={**HEADERS, "X-Request-Id": rid}
                        )
                        assert answer.status_code == 200
                await asyncio.to_thread(sidecar.reporter.flush)
                rows = await asyncio.to_thread(_rows, engine, 2)
            finally:
                await runner.cleanup()
    finally:
        await model.stop()
    assert sidecar.oversized == 1 and sidecar.reporter.dropped == 0
    assert [r.request_id for r in rows] == ["r-1", "r-2"]
    assert rows[0].input is not None and json.loads(rows[0].slices)["device"] == "ios"
    assert rows[1].input is None
    assert json.loads(rows[1].slices) == {"device": None, "region": "eu"}


async def test_bodies_waiting_to_be_sent_are_bounded_in_bytes(tmp_path: Path) -> None:
    model = Upstream("v1")
    await model.start()
    data = json.dumps(BODY).encode()
    try:
        with _api(_config(tmp_path / "api.db", model.url)) as (api, engine):
            # nothing is sent until flush: the queue holds what the API has not taken yet
            sidecar, runner, url = await _sidecar(
                model.url, api, flush_s=60, max_held_bodies=2 * len(data)
            )
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    for rid in ("r-1", "r-2", "r-3"):
                        answer = await http.post(
                            url + PATH, content=data, headers={**HEADERS, "X-Request-Id": rid}
                        )
                        assert answer.status_code == 200
                held = sidecar.reporter.held_bytes
                await asyncio.to_thread(sidecar.reporter.flush)
                rows = await asyncio.to_thread(_rows, engine, 3)
            finally:
                await runner.cleanup()
    finally:
        await model.stop()
    assert (held, sidecar.held_back, sidecar.reporter.held_bytes) == (2 * len(data), 1, 0)
    assert [r.request_id for r in rows] == ["r-1", "r-2", "r-3"]
    assert [r.input is not None for r in rows] == [True, True, False]
    assert json.loads(rows[2].slices) == {"device": None, "region": "eu"}


def test_explicit_slices_are_kept_beside_request_headers(tmp_path: Path) -> None:
    with _api(_config(tmp_path / "api.db", "http://127.0.0.1:9")) as (api, engine):
        items = [
            {"request_id": "a", "model": "m", "version": "v1", "latency_ms": 1.0,
             "slices": {"region": "us", "tier": "gold"}},
            {"request_id": "b", "model": "m", "version": "v1", "latency_ms": 1.0,
             "slices": {"region": "us"}, "headers": {"x-region": "eu"},
             "body": json.dumps(BODY)},
        ]  # fmt: skip
        done = Client(api, TOKEN).ingest(items)
        rows = _rows(engine, 2)
        both = httpx.post(
            api + "/api/v1/predictions",
            json={"items": [{**items[1], "request_id": "c", "input": BODY}]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert done == {"written": 2, "duplicates": 0}
    assert json.loads(rows[0].slices) == {"region": "us", "tier": "gold"}
    assert rows[0].input is None
    assert json.loads(rows[1].slices) == {"device": "ios", "region": "us"}
    assert "[redacted]" in rows[1].input
    assert both.status_code == 422 and "items.0" in both.text
