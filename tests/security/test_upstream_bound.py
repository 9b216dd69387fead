"""A model server's answer is bounded: a huge body, a huge chunked stream or a gzip bomb is
refused (UpstreamTooLarge, logged as error class too_large) by both upstream clients, without
reading it all; and a shadow answering one never disturbs the production answer."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from coalmine.gateway.upstream.base import UpstreamClient, UpstreamTooLarge
from coalmine.gateway.upstream.registry import CLIENTS, make_client
from tests.gateway.conftest import StartGateway, Upstream, make_config

LIMIT = 1 << 20
BIG = b"x" * (LIMIT + 1)
BOMB = gzip.compress(b"\0" * (64 << 20))  # ~64 KB on the wire, 64 MB decoded


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"y" * (1 << 16))
        await response.write_eof()
        return response

    async def bomb(_: web.Request) -> web.Response:
        return web.Response(
            body=BOMB, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"predictions": [1]})

    app = web.Application()
    for path, handler in (("/big", big), ("/stream", stream), ("/bomb", bomb), ("/ok", ok)):
        app.router.add_route("POST", path, handler)
    runner, url = await _start(app)
    yield url
    await runner.cleanup()


@pytest.fixture(params=sorted(CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    made = make_client(request.param, max_response_bytes=LIMIT)
    yield made
    await made.close()


@pytest.mark.parametrize("path", ["/big", "/stream", "/bomb"])
async def test_an_answer_past_the_bound_is_refused_and_the_client_carries_on(
    client: UpstreamClient, hostile: str, path: str
) -> None:
    with pytest.raises(UpstreamTooLarge) as info:
        await client.post(hostile + path, b"{}", [], timeout=10)
    assert info.value.error_class == "too_large"
    answer = await client.post(hostile + "/ok", b"{}", [], timeout=10)  # the pool is usable
    assert answer.status == 200 and json.loads(answer.body) == {"predictions": [1]}


async def test_a_shadow_answering_a_bomb_leaves_production_untouched(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, hostile: str
) -> None:
    # the shadow version's base URL serves the bomb for every V1 predict path
    app = web.Application()

    async def bomb(_: web.Request) -> web.Response:
        return web.Response(
            body=BOMB, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    app.router.add_route("POST", "/{tail:.*}", bomb)
    runner, shadow_url = await _start(app)
    try:
        config = make_config(
            tmp_path,
            {"v1": upstreams["v1"].url, "v2": shadow_url},
            routing={"shadow": "v2", "mirror_share": 100},
            gateway={"max_response_bytes": LIMIT},
        )
        gw = await start_gateway(config)
        for _ in range(5):
            status, headers, body = await gw.post("/v1/models/m:predict")
            assert status == 200 and headers["X-Model-Version"] == "v1"
            assert json.loads(body) == {"predictions": ["label-v1"]}
        await gw.stop()  # drains the mirror and flushes the log
        rows = gw.rows()
    finally:
        await runner.cleanup()
    shadow = [r for r in rows if r.role == "shadow"]
    assert len(shadow) == 5 and {r.error_class for r in shadow} == {"too_large"}
    assert {r.status for r in rows if r.role == "stable"} == {200}
