"""Real servers on loopback for the gateway tests: fake model upstreams and the gateway.

Upstreams are small aiohttp servers in the test's event loop (each a real socket on an
ephemeral port); `Upstream.mode` switches what they do: answer, sleep, fail, or reject.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine, select

from coalmine.config import CoalmineConfig, parse_config
from coalmine.gateway.server import seed_routes, start_site
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import predictions

BODY = {"instances": [{"user_id": "u-1", "features": [0.1, 0.2], "device": "ios"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_app(
    app: web.Application, *, ssl_context: Any = None, **runner_options: Any
) -> tuple[web.AppRunner, str]:
    """`app` served on an ephemeral loopback port: its runner (to clean up) and its URL."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"{'https' if ssl_context is not None else 'http'}://127.0.0.1:{port}"


@dataclass
class Upstream:
    """A fake model server. mode: ok | slow | error | reject."""

    version: str
    mode: str = "ok"
    delay_s: float = 2.0
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if self.mode == "reject" or ("instances" not in payload and "inputs" not in payload):
            return web.json_response({"error": "missing instances"}, status=422)
        label = f"label-{self.version}"
        if request.path.startswith("/v2/"):
            tensor = {"name": "predict", "shape": [1], "datatype": "BYTES", "data": [label]}
            out: dict[str, Any] = {"model_name": "m", "outputs": [tensor]}
        elif request.path.startswith("/v1/"):
            out = {"predictions": [label]}
        else:
            out = {"prediction": label}
        return web.json_response(out, headers={"X-Upstream": self.version})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner, self.url = await serve_app(app, shutdown_timeout=0.1)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request off a raw upstream connection: its head and its body (Content-Length,
    none when absent), for tests whose upstream speaks HTTP by hand."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return head, await reader.readexactly(length)


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    ups = {v: Upstream(v) for v in ("v1", "v2", "v3")}
    for up in ups.values():
        await up.start()
    yield ups
    for up in ups.values():
        await up.stop()


def make_config(
    tmp_path: Path,
    urls: dict[str, str],
    *,
    routing: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    slices: list[dict[str, Any]] | None = None,
    model: str = "m",
) -> CoalmineConfig:
    data: dict[str, Any] = {
        "gateway": {"port": 0, "routing_poll_s": 0.1, "fast_guard_failures": 0, **(gateway or {})},
        "logging": {"flush_interval_s": 0.05, **(logging or {})},
        "store": {"url": f"sqlite:///{tmp_path / 'coalmine.db'}"},
        "models": [
            {
                "name": model,
                "versions": [{"name": v, "url": u} for v, u in urls.items()],
                "routing": {"stable": "v1", **(routing or {})},
                "slices": slices or [],
            }
        ],
    }
    return parse_config(data)


@dataclass
class RunningGateway:
    url: str
    config: CoalmineConfig
    runner: Any  # server._GatewayRunner
    session: aiohttp.ClientSession
    engine: Engine

    async def post(
        self, path: str, body: Any = BODY, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.post(self.url + path, data=data, headers=hdrs) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(predictions).order_by(predictions.c.id)))

    async def stop(self) -> None:
        """Graceful stop: drains the mirror and flushes the log."""
        await self.runner.cleanup()


StartGateway = Callable[..., Awaitable[RunningGateway]]


SERVERS = ("protocol", "aiohttp")  # gateway.server: one contract suite for both


def on_server(config: CoalmineConfig, server: str | None) -> CoalmineConfig:
    """`config` with `gateway.server` set to `server` (None: as the config says)."""
    if server is None:
        return config
    gateway = config.gateway.model_copy(update={"server": server})
    return config.model_copy(update={"gateway": gateway})


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def start_gateway(tmp_path: Path, server: str | None) -> AsyncIterator[StartGateway]:
    """Starts gateways on each of the data plane's servers in turn (the test runs once per
    server): whatever a test asserts holds for both implementations."""
    started: list[RunningGateway] = []

    async def start(config: CoalmineConfig) -> RunningGateway:
        config = on_server(config, server)
        seed_routes(config)
        runner, port = await start_site(config, port=0)
        session = aiohttp.ClientSession()
        gw = RunningGateway(
            f"http://127.0.0.1:{port}", config, runner, session, open_engine(config.store.url)
        )
        started.append(gw)
        return gw

    yield start
    for gw in started:
        await gw.session.close()
        await gw.runner.cleanup()
        gw.engine.dispose()


async def start_on_route(
    start_gateway: StartGateway, config: CoalmineConfig, **route: Any
) -> RunningGateway:
    """Start a gateway on model "m"'s route already carrying `route` in the store (a
    baseline, a paired canary: what the config alone does not say)."""
    seed_routes(config)
    engine = open_engine(config.store.url)
    try:
        RouteRepository(engine).set_route("m", **route)
    finally:
        engine.dispose()
    return await start_gateway(config)
