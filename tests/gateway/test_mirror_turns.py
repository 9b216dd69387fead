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
