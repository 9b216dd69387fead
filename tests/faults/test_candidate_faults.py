"""A candidate (canary) model process that hangs, dies or answers garbage: what its users
see and what the prediction log holds. The gateway runs in the test's loop on real
sockets; the models are real `serve-model` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from sqlalchemy import select

from coalmine.store.schema import guard_trips
from tests.faults.conftest import IRIS_ROW, ModelServers
from tests.gateway.conftest import StartGateway, make_config

V1 = "/v1/models/m:predict"
BODY = {"instances": [IRIS_ROW]}


async def test_a_hung_canary_holds_its_users_only_until_the_canary_deadline(
    tmp_path: Path, model_servers: ModelServers, start_gateway: StartGateway
) -> None:
    stable, canary = model_servers("v1"), model_servers("v2")
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
