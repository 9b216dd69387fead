"""The mirror sends copies with production's concurrency, not its workers' (issue 15).

A shadow that stalls for a moment (a single-threaded model server on a loaded machine) had up
to `shadow.workers` (16) copies piled on it, each timed with the whole stall, while the
production clients had only a couple of calls in flight: an identical shadow's p99 measured
3.5× production's live and FAILed `latency_p99`. Here a real upstream that answers one call
at a time stands for that shadow; production's clients keep 2 calls in flight.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from tests.gateway.conftest import StartGateway, Upstream, make_config

V1 = "/v1/models/m:predict"


class OneAtATime(Upstream):
    """Answers one call at a time after `delay_s`, and records the most calls in flight."""

    def __init__(self, version: str, delay_s: float) -> None:
        super().__init__(version, delay_s=delay_s)
        self.lock = asyncio.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            async with self.lock:
                await asyncio.sleep(self.delay_s)
                return await super().handle(request)
        finally:
            self.in_flight -= 1


async def test_copies_in_flight_follow_production_not_the_workers(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    shadow = OneAtATime("v3", delay_s=0.02)
    await shadow.start()
    try:
        config = make_config(
            tmp_path,
            {"v1": upstreams["v1"].url, "v3": shadow.url},
            routing={"shadow": "v3", "mirror_share": 100},
            gateway={"shadow": {"queue_size": 1000, "workers": 16, "timeout_s": 5.0}},
        )
        gw = await start_gateway(config)
        sent = list(range(120))

        async def client() -> None:  # a closed-loop client: one call at a time
            while sent:
                sent.pop()
                status, _, _ = await gw.post(V1)
                assert status == 200

        await asyncio.gather(client(), client())
        mirror = gw.runner.gateway.mirror
        async with asyncio.timeout(30):
            while mirror.depth() or len(shadow.seen) < 120 - mirror.dropped:
                await asyncio.sleep(0.05)
        await gw.stop()
    finally:
        await shadow.stop()
    # production had at most 2 calls in flight: so had the shadow (was: up to 16)
    assert 1 <= shadow.most_in_flight <= 2, shadow.most_in_flight
    shadow_rows = [r for r in gw.rows() if r.role == "shadow"]
    assert len(shadow_rows) + mirror.dropped == 120
    assert shadow_rows and all(r.status == 200 for r in shadow_rows)
