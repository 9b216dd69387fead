"""At one connection production's request goes out before its copies (issue 12).

The copies are built, queued and sent once the request path has yielded: production's request
is written first, so none of the copies' work is on its way out to production's upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from coalmine.gateway.server import seed_routes, start_site
from tests.gateway.conftest import (
    BODY,
    SERVERS,
    StartGateway,
    Upstream,
    make_config,
    read_request,
    start_on_route,
)

V1 = "/v1/models/m:predict"


class _Recording(Upstream):
    """An upstream that notes, in one list shared by all, each request as it comes in."""

    def __init__(self, version: str, arrivals: list[tuple[str, str, bool]]) -> None:
        super().__init__(version)
        self.arrivals = arrivals

    async def handle(self, request: web.Request) -> web.StreamResponse:
        copy = request.headers.get("X-Shadow") == "1"
        self.arrivals.append((request.headers["X-Request-ID"], self.version, copy))
        return await super().handle(request)


# the shadow's copy of production's call to the stable version; and with a canary taking
# every request, the shadow's copy and the stable version's paired copy of each
SCENARIOS = {
    "shadow": ({"shadow": "v3", "mirror_share": 100}, {}),
    "paired": (
        {"canary": "v2", "canary_weight": 100, "shadow": "v3", "mirror_share": 100},
        {"paired": True, "rollout_id": 1},
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("client", ["httptools", "aiohttp"])
async def test_production_request_arrives_before_its_copies(
    tmp_path: Path, start_gateway: StartGateway, client: str, scenario: str
) -> None:
    routing, route = SCENARIOS[scenario]
    production, copies = ("v2", ["v1", "v3"]) if scenario == "paired" else ("v1", ["v3"])
    arrivals: list[tuple[str, str, bool]] = []
    ups = {v: _Recording(v, arrivals) for v in ("v1", "v2", "v3")}
    for up in ups.values():
        await up.start()
    try:
        config = make_config(
            tmp_path,
            {v: up.url for v, up in ups.items()},
            routing=routing,
            gateway={"upstream_client": client},
        )
        gw = await start_on_route(start_gateway, config, **route)

        async def requests(prefix: str, n: int) -> None:
            for i in range(n):  # one at a time: one connection, as in the p50
                status, headers, _ = await gw.post(V1, headers={"X-Request-ID": f"{prefix}{i}"})
                assert status == 200 and headers["X-Model-Version"] == production
            async with asyncio.timeout(10):
                while len(arrivals) < n * (1 + len(copies)):
                    await asyncio.sleep(0.01)

        # the upstream connections opened first: production's call then finds one idle (at
        # one connection, every call but the first), as a copy does
        await requests("warm", 2)
        arrivals.clear()
        n = 20
        await requests("r", n)
    finally:
        for up in ups.values():
            await up.stop()

    by_request: dict[str, list[tuple[str, bool]]] = {}
    for request_id, version, copy in arrivals:
        by_request.setdefault(request_id, []).append((version, copy))
    assert len(by_request) == n
    for seen in by_request.values():
        # production's request came in first; its copies after it
        assert seen[0] == (production, False), by_request
        assert sorted(version for version, copy in seen[1:] if copy) == copies, by_request


_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n"


class _Production(asyncio.Protocol):
    """Production's upstream: notes the mirror's queue depth the moment it reads the first
    bytes of a request (uvloop runs this in its poll, as soon as the socket is readable)."""

    def __init__(self, depth: Callable[[], int], queued: list[int]) -> None:
        self.depth, self.queued = depth, queued

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.reader = asyncio.StreamReader()
        self.task = asyncio.ensure_future(self.serve())

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"POST "):
            self.queued.append(self.depth())
        self.reader.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.feed_eof()

    async def serve(self) -> None:
        try:
            while True:
                await read_request(self.reader)
                self.transport.write(_ANSWER + b'{"predictions":[1]}')  # type: ignore[attr-defined]
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def _production_then_copies(tmp_path: Path, server: str, n: int) -> tuple[list[int], int]:
    """`n` requests one at a time through a gateway on `server`, mirrored to a shadow: the
    queue depth production's upstream saw with each request, and the copies the shadow got."""
    queued: list[int] = []
    shadow = Upstream("v3")
    await shadow.start()
    box: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    production = await loop.create_server(
        lambda: _Production(lambda: box["mirror"].depth(), queued), "127.0.0.1", 0
    )
    port = production.sockets[0].getsockname()[1]
    try:
        config = make_config(
            tmp_path,
            {"v1": f"http://127.0.0.1:{port}", "v3": shadow.url},
            routing={"shadow": "v3", "mirror_share": 100},
            gateway={"upstream_client": "httptools", "server": server},
        )
        seed_routes(config)
        runner, gateway_port = await start_site(config, port=0)
        box["mirror"] = runner.gateway.mirror  # type: ignore[attr-defined]
        try:
            async with aiohttp.ClientSession() as session:
                for i in range(n):  # one at a time; each copy answered before the next
                    url = f"http://127.0.0.1:{gateway_port}{V1}"
                    async with session.post(url, json=BODY) as response:
                        assert response.status == 200
                    async with asyncio.timeout(10):
                        while len(shadow.seen) < i + 1:
                            await asyncio.sleep(0.01)
        finally:
            await runner.cleanup()
    finally:
        production.close()
        await shadow.stop()
    return queued, len(shadow.seen)


@pytest.mark.parametrize("server", SERVERS)
def test_production_request_is_out_before_its_copies_are_queued(
    tmp_path: Path, server: str
) -> None:
    """On uvloop, the gateway's loop: a socket made readable by production's request is
    read in the poll that follows the request path's yield, before the callbacks that path
    left. So production's upstream sees an empty queue iff the copy was not yet queued."""
    n = 10
    queued, copies = uvloop.run(_production_then_copies(tmp_path, server, n))
    assert len(queued) == n and copies == n  # every request answered and mirrored
    # the first request opens production's connection (its copy may be queued meanwhile); on
    # the idle pooled connection after it, production's request is out before its copy is
    # even built
    assert queued[1:] == [0] * (n - 1)
