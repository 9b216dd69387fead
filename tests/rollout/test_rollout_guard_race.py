"""A fast-guard trip recorded just after the controller decided to roll back.

The real controller, the real gateway (in this process, on loopback) and a real SQLite
store; the candidate's URL refuses connections, as in the report of the stuck rollback. The
judge is a stand-in that concludes FAIL only once the gateway has recorded its trip: that
forces the interleaving the report saw by chance (the trip lands after the controller read
the trips of this pass, before it applied the rollback), so the test fails every time
against the old drive loop instead of one time in two.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine, func, select

from coalmine.config import CoalmineConfig, parse_config
from coalmine.gateway.server import seed_routes, start_site
from coalmine.rollout.controller import Controller
from coalmine.rollout.machine import Evidence, Phase
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.schema import guard_trips

FAILING = "error_rate 100% vs 0% is above the margin: FAIL"


def refused_url() -> str:
    """A loopback URL nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def trip_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(guard_trips)).scalar() or 0)


class FailsOnceTheGuardTripped:
    """FAIL, but only after the gateway's trip is in the store (a slow judgement)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        deadline = time.monotonic() + 20
        while trip_count(self.engine) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway recorded no trip")
            time.sleep(0.02)
        return Evidence(failing=(FAILING,), samples=10)

    def forget(self, rollout_id: int) -> None:
        pass


@pytest.fixture
async def stable_url() -> AsyncIterator[str]:
    async def predict(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def gateway_config(tmp_path: Path, stable: str) -> CoalmineConfig:
    return parse_config(
        {
            "gateway": {"port": 0, "routing_poll_s": 0.1, "fast_guard_failures": 3},
            "logging": {"flush_interval_s": 0.05},
            "store": {"url": f"sqlite:///{tmp_path / 'coalmine.db'}"},
            "models": [
                {"name": "m", "versions": [{"name": "v1", "url": stable}],
                 "routing": {"stable": "v1"}}
            ],
        }
    )  # fmt: skip


async def test_a_trip_recorded_after_the_rollback_decision_does_not_hold_it_for_ever(
    tmp_path: Path, stable_url: str
) -> None:
    config = gateway_config(tmp_path, stable_url)
    seed_routes(config)
    engine = open_engine(config.store.url)
    repo = RolloutRepository(engine)
    spec = parse_spec({"shadow": {"enabled": False}, "interval": 0.1,
                       "canary": {"steps": [50, 100]}})  # fmt: skip
    record = repo.create("m", "v2", refused_url(), spec)
    ctl = Controller(engine, FailsOnceTheGuardTripped(engine), tick_s=0.05)
    runner, port = await start_site(config, port=0)
    try:
        await ctl.tick()  # pending -> canary at 50%
        assert repo.get(record.id).state.phase == Phase.CANARY

        # the judgement runs while users' requests reach the dead candidate
        judging = asyncio.create_task(ctl.tick())
        statuses = []
        async with aiohttp.ClientSession() as session:
            while not judging.done():
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/models/m:predict", json={"instances": [[1]]}
                ) as resp:
                    statuses.append(resp.status)
                await asyncio.sleep(0.01)
        [rollback] = await judging
        assert rollback.kind == "rollback"
        assert repo.get(record.id).state.phase == Phase.ROLLING_BACK
        assert trip_count(engine) == 1
        # the candidate's refusals were failed over: no user saw an error
        assert set(statuses) == {200}

        for _ in range(5):
            await ctl.tick()
        after = repo.get(record.id)
        assert after.state.phase == Phase.ROLLED_BACK
        assert after.state.reason is not None and FAILING in after.state.reason
        with engine.connect() as conn:
            last_trip = conn.execute(select(func.max(guard_trips.c.id))).scalar()
        assert after.guard_seen_id == last_trip  # the trip was acknowledged
        kinds = [e["kind"] for e in repo.events(record.id)]
        assert kinds == ["created", "advance", "rollback", "rolled_back"]
        # and the model is free for the next rollout
        repo.create("m", "v3", stable_url, spec)
    finally:
        await runner.cleanup()
        engine.dispose()
