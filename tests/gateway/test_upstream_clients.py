"""One contract suite for every upstream client, against real servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from coalmine.gateway.upstream.base import (
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from coalmine.gateway.upstream.registry import CLIENTS, make_client, register_client
from tests.gateway.conftest import free_port


@pytest.fixture(params=sorted(CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    made = make_client(request.param)
    yield made
    await made.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    """An upstream with a few behaviours; yields its URL and the peer ports it saw."""
    peers: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(str(request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]
        body = await request.read()
        return web.Response(
            body=body,
            status=int(request.headers.get("X-Status", "200")),
            content_type="application/x-echo",
            headers={"X-Got-Header": request.headers.get("X-Custom", "")},
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/slow", slow)
    app.router.add_post("/chunked", chunked)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, keepalive_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", peers
    await runner.cleanup()


async def test_status_body_content_type_and_headers(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    response = await client.post(
        url + "/echo", b'{"x": 1}', [("X-Custom", "yes"), ("Content-Type", "application/json")], 5
    )
    assert (response.status, response.body) == (200, b'{"x": 1}')
    assert response.content_type.startswith("application/x-echo")
    for status in (404, 422, 500, 503):
        response = await client.post(url + "/echo", b"", [("X-Status", str(status))], 5)
        assert response.status == status


async def test_connections_are_kept_alive_and_stale_ones_replaced(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, peers = server
    for _ in range(5):
        assert (await client.post(url + "/echo", b"a", [], 5)).status == 200
    assert len(set(peers)) == 1  # one connection, reused
    await asyncio.sleep(0.6)  # the server closes idle connections after 0.2 s
    assert (await client.post(url + "/echo", b"b", [], 5)).body == b"b"
    assert len(set(peers)) == 2


async def test_concurrent_requests(client: UpstreamClient, server: tuple[str, list[str]]) -> None:
    url, _ = server
    bodies = [str(i).encode() * 10 for i in range(50)]
    responses = await asyncio.gather(*(client.post(url + "/echo", b, [], 5) for b in bodies))
    assert [r.body for r in responses] == bodies


async def test_large_and_chunked_bodies(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    big = b"x" * 300_000
    assert (await client.post(url + "/echo", big, [], 5)).body == big
    response = await client.post(url + "/chunked", b"", [], 5)
    assert response.body == b"one,two,three"


async def test_timeout(client: UpstreamClient, server: tuple[str, list[str]]) -> None:
    url, _ = server
    with pytest.raises(UpstreamTimeout):
        await client.post(url + "/slow", b"", [], 0.2)
    # the client is still usable afterwards
    assert (await client.post(url + "/echo", b"ok", [], 5)).body == b"ok"


async def test_connection_refused(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamConnectionError):
        await client.post(f"http://127.0.0.1:{free_port()}/echo", b"", [], 2)


def test_registry_rejects_unknown_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unknown upstream client 'curl'"):
        make_client("curl")
    with pytest.raises(ValueError, match="already registered"):
        register_client("aiohttp", CLIENTS["aiohttp"])
