"""The mirror's turns: copies wait, in order, while their model and role are at the cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from coalmine.gateway.mirror import ShadowMirror
from coalmine.gateway.protocols import V1
from coalmine.gateway.upstream.httptools_client import HttptoolsClient
from tests.gateway.conftest import serve_app


class Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def submit(self, record: Any) -> None:
        self.records.append(record)


class _Metrics:
    def observe(self, elapsed: float, error_class: str | None) -> None:
        pass


ROUTE = SimpleNamespace(
    model="m", shadow="v3", stable="v1", scores_field=None, weight_bp=0, rollout_id=None,
    shadow_metrics=_Metrics(), baseline_metrics=_Metrics(), paired_metrics=_Metrics(),
)  # fmt: skip


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """Answers after 30 ms; records the most calls in flight per path."""
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        in_flight[path] = in_flight.get(path, 0) + 1
        most[path] = max(most.get(path, 0), in_flight[path])
        most["all"] = max(most.get("all", 0), sum(in_flight.values()))
        await request.read()
        await asyncio.sleep(0.03)
        in_flight[path] -= 1
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner, url = await serve_app(app)
    yield url, most
    await runner.cleanup()


async def _until(sink: Sink, n: int) -> None:
    async with asyncio.timeout(10):
        while len(sink.records) < n:
            await asyncio.sleep(0.01)


async def test_each_model_and_role_waits_for_its_own_turn(
    upstream: tuple[str, dict[str, int]],
) -> None:
    url, most = upstream
    client, sink = HttptoolsClient(), Sink()
    mirror = ShadowMirror(client, sink, queue_size=64, workers=8, timeout_s=5.0)  # type: ignore[arg-type]
    mirror.start()
    try:
        # no production call in flight: each copy may go only while none of its model and
        # role is out (cap 1)
        for i in range(6):
            for role in ("shadow", "baseline"):
                mirror.offer(ROUTE, V1, f"{url}/{role}", b"{}", [], f"r{i}", None, {}, role)
        assert mirror.depth() == 12
        await _until(sink, 12)
        assert most["/shadow"] == most["/baseline"] == 1
        assert most["all"] == 2  # a waiting shadow copy does not hold the baseline's back
        assert [r.request_id for r in sink.records if r.role == "shadow"] == [
            f"r{i}" for i in range(6)
        ]  # in the order offered
        assert mirror.dropped == 0 and mirror.depth() == 0
    finally:
        await mirror.close()
        await client.close()


@pytest.fixture
async def gated() -> AsyncIterator[tuple[str, list[str], asyncio.Event]]:
    """Holds each call until the test sets the gate; records the request ids received."""
    received: list[str] = []
    gate = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        received.append(request.path.rsplit("/", 1)[1])
        await request.read()
        await gate.wait()
        return web.json_response({"predictions": [1]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner, url = await serve_app(app)
    yield url, received, gate
    await runner.cleanup()


async def test_a_full_queue_sends_fresh_copies_and_drops_the_stale_ones(
    gated: tuple[str, list[str], asyncio.Event],
) -> None:
    """A shadow slower than production keeps the queue full: the copies sent must be of
    recent requests, not of requests queued long before (which are dropped and counted)."""
    url, received, gate = gated
    client, sink = HttptoolsClient(), Sink()
    mirror = ShadowMirror(client, sink, queue_size=3, workers=1, timeout_s=5.0, max_age_s=1.0)  # type: ignore[arg-type]
    now = [100.0]
    mirror.clock = lambda: now[0]  # the queue's time, moved by the test
    mirror.start()
    offered = 0

    def offer(request_id: str) -> bool:
        nonlocal offered
        offered += 1
        return mirror.offer(ROUTE, V1, f"{url}/{request_id}", b"{}", [], request_id, None, {})

    try:
        with mirror.serving("m"):  # production busy: the cap lets one copy out at a time
            assert offer("r0")
            async with asyncio.timeout(10):
                while not received:  # r0 is at the shadow, which holds it
                    await asyncio.sleep(0.01)
            assert [offer(f"r{i}") for i in (1, 2, 3, 4)] == [True, True, True, False]
            now[0] += 5.0  # r1..r3 have waited 5 s for the slow shadow
            gate.set()  # r0 answered: its turn goes to the stale copies, which are dropped
            await _until(sink, 1)  # its turn passed on in the same callback
            assert mirror.depth() == 0 and mirror.dropped == 4  # r4 at the offer, r1..r3 stale
            assert offer("r5")
            await _until(sink, 2)
            # its room shrank by one per stale copy (3 -> 1) and grew by one as r5 went out
            # fresh: the queue holds 2 of its 3 places, what the shadow takes out in time
            assert [offer(f"r{i}") for i in (6, 7, 8)] == [True, True, False]
            await _until(sink, 4)
        assert received == ["r0", "r5", "r6", "r7"]  # the latest requests', in order
        assert [r.request_id for r in sink.records] == ["r0", "r5", "r6", "r7"]
        assert len(sink.records) + mirror.dropped == offered  # every copy sent or counted
    finally:
        await mirror.close()
        await client.close()
