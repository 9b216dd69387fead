"""The gateway on aiohttp: an Application to mount in-process, or aiohttp's low-level server.

`gateway.server: aiohttp` serves `Gateway.dispatch` on aiohttp's low-level server
(`start_aiohttp`, with the connection rules of `connections.py`); `build_app` makes an
Application of it for a caller that runs other aiohttp apps in the same process. Either
way this module only translates: aiohttp's request head into a `wire.Request`, the body
read under the gateway's limit and deadline, and the `wire.Answer` back into a response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from sqlalchemy import Engine

from coalmine.config import CoalmineConfig
from coalmine.gateway.app import Gateway
from coalmine.gateway.connections import ConnectionLimits, GatewayServer
from coalmine.gateway.upstream.base import UpstreamClient, split_head
from coalmine.gateway.wire import Answer, Request
from coalmine.log.writer import BatchWriter

__all__ = ["GATEWAY_KEY", "AiohttpRunner", "build_app", "handler", "start_aiohttp"]

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("coalmine_gateway")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def response(answer: Answer) -> web.Response:
    headers = CIMultiDict(answer.headers)
    if answer.head:  # aiohttp writes str headers: the upstream's lines decoded (latin-1)
        headers = CIMultiDict([*split_head(answer.head), *answer.headers])
    out = web.Response(body=answer.body, status=answer.status, headers=headers)
    if answer.close:
        out.force_close()
    return out


def handler(gateway: Gateway, *, answer_continue: bool = True) -> Handler:
    """`gateway.dispatch` as an aiohttp handler. `answer_continue`: answer `Expect:
    100-continue` here (aiohttp's low-level server leaves it to the handler; an
    Application's router answers it itself)."""
    max_body = gateway.max_body
    body_timeout = gateway.body_timeout

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        wire = Request(
            request.method, request.raw_path, request.headers, request.version, request.keep_alive
        )
        length = request.content_length
        if length is not None and length > max_body:
            return response(gateway.too_large_answer(wire))
        body = b""
        if request.can_read_body:
            if answer_continue and wire.expects_continue:
                # else clients such as curl wait a second before sending the body
                await request.writer.write(_CONTINUE)
            content = request.content
            if content.is_eof():
                # arrived whole already (most bodies): taken as it is, no timer, no copy
                body = content.read_nowait()
                if len(body) > max_body:  # chunked: no Content-Length was checked
                    return response(gateway.too_large_answer(wire))
            else:
                try:
                    async with asyncio.timeout(body_timeout):
                        body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    return response(gateway.too_large_answer(wire))
                except TimeoutError:
                    return response(gateway.body_timeout_answer(wire))
        return response(await gateway.dispatch(wire, body))

    return handle


class AiohttpRunner(web.ServerRunner):
    """A runner that, after the server's graceful shutdown, stops the gateway's parts."""

    def __init__(
        self, server: GatewayServer, gateway: Gateway, engine: Engine, **kwargs: Any
    ) -> None:
        super().__init__(server, handle_signals=False, **kwargs)
        self.gateway = gateway
        self._engine = engine

    async def _cleanup_server(self) -> None:
        await super()._cleanup_server()
        await self.gateway.stop()
        await asyncio.to_thread(self._engine.dispose)


async def start_aiohttp(
    gateway: Gateway,
    engine: Engine,
    limits: ConnectionLimits,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
) -> tuple[AiohttpRunner, int]:
    """Serve a started `gateway` on aiohttp's low-level server; its runner and bound port."""
    loop = asyncio.get_running_loop()
    max_body = gateway.max_body
    settings = gateway.config.gateway

    def make_request(
        message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        # the body limit, enforced by aiohttp as a body streams in (chunked bodies too)
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body
        )

    server = GatewayServer(
        handler(gateway),
        request_factory=make_request,
        access_log=None,
        limits=limits,
        keepalive_timeout=settings.keepalive_timeout_s,
        # after an early answer (413, 408...) aiohttp reads and discards the rest of the body
        # for up to this long: no longer than the body was allowed in the first place
        lingering_time=min(settings.body_timeout_s, 10.0),
    )
    runner = AiohttpRunner(server, gateway, engine, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=4096)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


def build_app(
    config: CoalmineConfig,
    engine: Engine,
    *,
    client: UpstreamClient | None = None,
    writer: BatchWriter | None = None,
) -> web.Application:
    """The gateway as an aiohttp Application, to mount or run beside other apps in-process.

    Starting the app loads the routes and starts the log writer; cleaning it up flushes
    the log. Routes are NOT seeded here: the caller seeds once
    (`RouteRepository.seed_from_config`), so several gateway processes do not race on it.
    `coalmine gateway` itself serves `Gateway.dispatch` on its own server
    (`server.start_site`), which skips the Application's router and middleware per request.
    """
    gateway = Gateway(config, engine, client=client, writer=writer)
    # aiohttp enforces the limit on bodies without Content-Length (chunked) as they stream
    app = web.Application(client_max_size=config.gateway.max_body_bytes)
    app[GATEWAY_KEY] = gateway
    app.router.add_route("*", "/{tail:.*}", handler(gateway, answer_continue=False))

    async def on_startup(_: web.Application) -> None:
        await gateway.start()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
