"""A candidate (canary) model process that hangs, dies or answers garbage: what its users
see and what the prediction log holds. The gateway runs in the test's loop on real
sockets; the models are real `serve-model` processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from coalmine.modelserver import ModelServerHandle
from coalmine.store.schema import guard_trips
from tests.faults.conftest import IRIS_ROW, ModelServers
from tests.gateway.conftest import RunningGateway, StartGateway, make_config

V1 = "/v1/models/m:predict"
BODY = {"instances": [IRIS_ROW]}


async def test_a_hung_canary_holds_its_users_only_until_the_canary_deadline(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    model_servers: ModelServers,
    start_gateway: StartGateway,
) -> None:
    stable, canary = stable_server, model_servers("v2")
    config = make_config(
        tmp_path,
        {"v1": stable.url, "v2": canary.url},
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"fast_guard_failures": 3, "canary_timeout_s": 0.5, "upstream_timeout_s": 10},
    )
    gw = await start_gateway(config)
    status, headers, _ = await gw.post(V1, BODY)
    assert (status, headers["X-Model-Version"]) == (200, "v2")  # the canary answers, then...
    os.kill(canary.pid, signal.SIGSTOP)  # ... hangs: it accepts connections, answers nothing

    async def one(i: int) -> tuple[int, str, float]:
        start = time.monotonic()
        status, headers, _ = await gw.post(V1, BODY, {"X-Request-ID": f"hung-{i}"})
        return status, headers["X-Model-Version"], time.monotonic() - start

    first = await asyncio.gather(*(one(i) for i in range(8)))
    # every user is answered by stable, long before the 10 s upstream timeout
    assert [(s, v) for s, v, _ in first] == [(200, "v1")] * 8
    assert max(waited for *_, waited in first) < 5.0, first
    # the timed-out calls tripped the guard: the next users go straight to stable
    later = [await one(100 + i) for i in range(5)]
    assert [(s, v) for s, v, _ in later] == [(200, "v1")] * 5
    async with asyncio.timeout(10):
        while True:
            with gw.engine.connect() as conn:
                trips = list(conn.execute(select(guard_trips)))
            if trips:
                break
            await asyncio.sleep(0.05)
    assert [(t.model, t.version) for t in trips] == [("m", "v2")]
    assert "3 consecutive canary failures" in trips[0].reason

    await gw.stop()
    rows = [r for r in gw.rows() if r.request_id.startswith("hung-")]
    canary_rows = [r for r in rows if r.role == "canary"]
    assert len(canary_rows) == 8
    assert all(r.error_class == "timeout" and 500 <= r.latency_ms < 5000 for r in canary_rows)
    assert sorted(r.request_id for r in rows if r.role == "stable") == sorted(
        [f"hung-{i}" for i in range(8)] + [f"hung-{100 + i}" for i in range(5)]
    )


async def _traffic(gw: RunningGateway, n: int, prefix: str, concurrency: int = 8) -> list[Any]:
    """n requests, `concurrency` at a time, with sticky users; (request id, status,
    version, body) of each, in request order."""
    out: list[Any] = [None] * n
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop(0)
            rid = f"{prefix}-{i}"
            status, headers, body = await gw.post(
                V1, BODY, {"X-Request-ID": rid, "X-User-Id": f"user-{i % 50}"}
            )
            out[i] = (rid, status, headers.get("X-Model-Version"), body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def test_a_canary_killed_mid_traffic_costs_its_users_nothing(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    model_servers: ModelServers,
    start_gateway: StartGateway,
) -> None:
    stable, canary = stable_server, model_servers("v2")
    config = make_config(
        tmp_path,
        {"v1": stable.url, "v2": canary.url},
        routing={"canary": "v2", "canary_weight": 50},
        gateway={"fast_guard_failures": 3},
    )
    gw = await start_gateway(config)
    before = await _traffic(gw, 100, "before")
    canary.process.send_signal(signal.SIGKILL)
    canary.process.wait(10)
    after = await _traffic(gw, 100, "after")

    # what the users see: every request answered 200 with iris class 0
    for rid, status, _, body in before + after:
        assert status == 200, (rid, body)
        assert json.loads(body)["predictions"] == [0], (rid, body)
    assert {v for _, _, v, _ in before} == {"v1", "v2"}
    assert {v for _, _, v, _ in after} == {"v1"}
    # what the log holds: after the kill, canary calls failed as "connection" (at most
    # the guard's three plus those already in flight), each followed by stable's answer
    await gw.stop()
    rows = gw.rows()
    by_id: dict[str, list[Any]] = {}
    for r in rows:
        by_id.setdefault(r.request_id, []).append(r)
    dead = [r for r in rows if r.request_id.startswith("after-") and r.role == "canary"]
    assert dead and all(r.error_class == "connection" for r in dead)
    assert len(dead) <= 3 + 8
    for rid, *_ in after:
        calls = [(r.role, r.version, r.status) for r in by_id[rid]]
        assert calls[-1] == ("stable", "v1", 200), (rid, calls)
    with gw.engine.connect() as conn:
        assert [(t.model, t.version) for t in conn.execute(select(guard_trips))] == [("m", "v2")]


@pytest.mark.parametrize("mode", ["garbage", "half"])
async def test_a_canary_answering_garbage_or_half_a_response(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    bad_model: Callable[[str], str],
    start_gateway: StartGateway,
    mode: str,
) -> None:
    stable = stable_server
    config = make_config(
        tmp_path,
        {"v1": stable.url, "v2": bad_model(mode)},
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"fast_guard_failures": 0},
    )
    gw = await start_gateway(config)
    answers = await _traffic(gw, 20, mode, concurrency=4)
    await gw.stop()
    rows = gw.rows()
    canary_rows = [r for r in rows if r.role == "canary"]
    assert len(canary_rows) == 20
    if mode == "garbage":
        # a complete 200 is the canary's answer, passed through as it came; the log
        # records the call with no readable prediction, for the analysis to count
        assert {(s, v) for _, s, v, _ in answers} == {(200, "v2")}
        assert {b for *_, b in answers} == {b"\x00\xffnot json at all<html>"}
        assert all(r.status == 200 and r.prediction is None for r in canary_rows)
        assert not [r for r in rows if r.role == "stable"]
    else:
        # half a response is no answer: a connection failure, and stable answers the user
        assert {(s, v) for _, s, v, _ in answers} == {(200, "v1")}
        assert all(json.loads(b)["predictions"] == [0] for *_, b in answers)
        assert all(r.error_class == "connection" and r.status == 0 for r in canary_rows)
        assert len([r for r in rows if r.role == "stable" and r.status == 200]) == 20


@pytest.mark.slow  # tests/gateway/test_shadow.py covers a slow shadow in a few seconds
async def test_a_hung_shadow_leaves_production_alone_and_every_copy_accounted_for(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    model_servers: ModelServers,
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stable, shadow = stable_server, model_servers("v3")
    config = make_config(
        tmp_path,
        {"v1": stable.url, "v3": shadow.url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 16, "workers": 2, "timeout_s": 1.0}},
    )
    gw = await start_gateway(config)
    os.kill(shadow.pid, signal.SIGSTOP)
    answers = await _traffic(gw, 200, "prod")
    assert {(s, v) for _, s, v, _ in answers} == {(200, "v1")}
    mirror = gw.runner.gateway.mirror
    caplog.set_level(logging.WARNING, logger="coalmine.gateway.mirror")
    await gw.stop()
    rows = gw.rows()
    assert len([r for r in rows if r.role == "stable" and r.status == 200]) == 200
    shadow_rows = [r for r in rows if r.role == "shadow"]
    # no copy silently lost: each is a logged timeout or a counted drop
    assert all(r.error_class == "timeout" for r in shadow_rows)
    assert len(shadow_rows) + mirror.dropped == 200
    assert mirror.dropped > 0  # 2 workers x 1 s cannot keep up with a hung shadow


async def test_a_canary_that_never_accepts_connections_is_cut_at_the_canary_deadline(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    bad_model: Callable[[str], str],
    start_gateway: StartGateway,
) -> None:
    config = make_config(
        tmp_path,
        {"v1": stable_server.url, "v2": bad_model("stuck")},
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"fast_guard_failures": 0, "canary_timeout_s": 0.5, "upstream_timeout_s": 30},
    )
    gw = await start_gateway(config)
    start = time.monotonic()
    answers = await _traffic(gw, 12, "stuck", concurrency=4)
    waited = time.monotonic() - start
    assert {(s, v) for _, s, v, _ in answers} == {(200, "v1")}
    assert waited < 12 * 0.5 + 10  # three rounds of the 0.5 s deadline, not of 30 s
    await gw.stop()
    canary_rows = [r for r in gw.rows() if r.role == "canary"]
    assert len(canary_rows) == 12
    assert {r.error_class for r in canary_rows} == {"timeout"}
