"""The sample-ratio guard through the real gateway and the real controller.

The route is sticky on X-User-Id. When every request carries the same key (a client that
sends a constant, a proxy that overwrites the header), all of them land on one side of a 50%
split: the comparison is meaningless, and the rollout is held with the reason in its events.
With real, varied keys the same rollout goes on. The judge is a stand-in that never decides
(its verdicts are tested elsewhere): what is under test is the guard beside it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine, func, select

from coalmine.config import parse_config
from coalmine.gateway.server import seed_routes, start_site
from coalmine.rollout.controller import Controller
from coalmine.rollout.machine import Evidence, Phase
from coalmine.rollout.spec import RolloutSpec, parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.schema import predictions

SPEC = parse_spec(
    {"shadow": {"enabled": False}, "interval": 0.05,
     "canary": {"steps": [50, 100], "min_duration": 600, "max_duration": 900,
                "sample_ratio_tolerance": 0.4}}
)  # fmt: skip


class Undecided:
    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        return Evidence(samples=0, must_not_fail=1)

    def forget(self, rollout_id: int) -> None:
        pass


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def predict(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


def logged(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(predictions)).scalar() or 0)


async def run(
    tmp_path: Path, upstream: str, keys: list[str], spec: RolloutSpec = SPEC
) -> tuple[RolloutRecord, list[str]]:
    config = parse_config(
        {
            "gateway": {"port": 0, "routing_poll_s": 0.1},
            "logging": {"flush_interval_s": 0.05},
            "store": {"url": f"sqlite:///{tmp_path / 'coalmine.db'}"},
            "models": [{"name": "m", "versions": [{"name": "v1", "url": upstream}],
                        "routing": {"stable": "v1", "sticky": {"header": "X-User-Id"}}}],
        }
    )  # fmt: skip
    seed_routes(config)
    engine = open_engine(config.store.url)
    repo = RolloutRepository(engine)
    record = repo.create("m", "v2", upstream, spec)  # the same server: only the split matters
    ctl = Controller(engine, Undecided())
    runner, port = await start_site(config, port=0)
    try:
        await ctl.tick()  # pending -> canary at 50%
        assert repo.get(record.id).state.phase == Phase.CANARY
        await asyncio.sleep(0.5)  # the gateway's next poll sees the split
        await ctl.tick()  # the step's first evaluation: the guard starts reading here
        async with aiohttp.ClientSession() as session:
            for key in keys:
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/models/m:predict",
                    json={"instances": [[1]]},
                    headers={"X-User-Id": key},
                ) as resp:
                    assert resp.status == 200
        deadline = time.monotonic() + 10
        while logged(engine) < len(keys) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for _ in range(3):
            await asyncio.sleep(0.06)  # past the evaluation interval
            await ctl.tick()
        return repo.get(record.id), [e["reason"] for e in repo.events(record.id)]
    finally:
        await runner.cleanup()
        engine.dispose()


async def test_one_key_for_everyone_holds_the_rollout_with_the_reason(
    tmp_path: Path, upstream: str
) -> None:
    after, reasons = await run(tmp_path, upstream, ["the-same-user"] * 300)
    assert after.state.phase == Phase.PAUSED and after.state.paused_phase == Phase.CANARY
    assert "sample ratio mismatch" in reasons[-1]
    assert "of 300 requests" in reasons[-1] and "50.00%" in reasons[-1]
    assert after.state.canary_weight_bp == 5000  # held where it was, for a person to decide


async def test_the_guard_can_be_turned_off_in_the_spec(tmp_path: Path, upstream: str) -> None:
    off = parse_spec({**SPEC.model_dump(mode="json"),
                      "canary": {**SPEC.canary.model_dump(mode="json"),
                                 "sample_ratio_tolerance": None}})  # fmt: skip
    after, reasons = await run(tmp_path, upstream, ["the-same-user"] * 300, off)
    assert after.state.phase == Phase.CANARY
    assert not any("sample ratio" in r for r in reasons)


async def test_varied_keys_leave_the_rollout_running(tmp_path: Path, upstream: str) -> None:
    after, reasons = await run(tmp_path, upstream, [uuid.uuid4().hex for _ in range(300)])
    assert after.state.phase == Phase.CANARY
    assert not any("sample ratio" in r for r in reasons)


def test_a_failed_over_request_is_one_routing_decision(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    config = parse_config(
        {"models": [{"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                     "routing": {"stable": "v1"}}]}
    )  # fmt: skip
    from coalmine.store.routes import RouteRepository

    RouteRepository(engine).seed_from_config(config)
    repo = RolloutRepository(engine)
    rec = repo.create("m", "v2", "http://127.0.0.1:10", SPEC, now=100.0)

    def row(rid: str, role: str, version: str, status: int = 200, weight: int = 500) -> dict:
        return {"request_id": rid, "model": "m", "version": version, "role": role, "ts": 101.0,
                "latency_ms": 1.0, "status": status, "canary_weight_bp": weight,
                "rollout_id": rec.id}  # fmt: skip

    rows = [
        row("a", "canary", "v2", status=0), row("a", "stable", "v1"),  # failed over
        row("b", "baseline", "v1", status=503), row("b", "stable", "v1"),  # failed over
        row("c", "stable", "v1"), row("d", "canary", "v2"),
        row("e", "shadow", "v2"),  # a mirrored copy is not a request
        row("f", "stable", "v1", weight=2500),
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    try:
        upto, groups = repo.split_counts(rec.state, since=100.0, after_id=0)
        assert upto == len(rows)
        assert groups == [(500, 2, 2, 1.0), (2500, 0, 1, 1.0)]  # (weight, cand, others, rate)
        assert repo.split_counts(rec.state, since=100.0, after_id=upto) == (upto, [])
        # stable rows sampled at 10% (sample_weight 10): logged counts, and the others' rate
        sampled = [{**row(f"s{i}", "stable", "v1"), "sample_weight": 10.0} for i in range(4)]
        with engine.begin() as conn:
            conn.execute(
                predictions.insert(),
                [*sampled, {**row("z", "canary", "v2"), "sample_weight": None}],
            )
        _, groups = repo.split_counts(rec.state, since=100.0, after_id=upto)
        assert groups == [(500, 1, 4, pytest.approx(0.1))]
    finally:
        engine.dispose()
