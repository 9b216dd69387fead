"""A bound on the control API's request bodies: 413 past `max_bytes`, before any route runs.

uvicorn and FastAPI read a body whole, however large (a 20 MB POST was read and validated);
the data plane has had its bound (`gateway.max_body_bytes`) from the start. The body is
read here, up to the bound, and replayed to the app: a declared Content-Length over the
bound is refused before the app sees a byte, a chunked body as soon as it passes the bound.

A refused body is still read and dropped (up to DRAIN_BYTES, for at most DRAIN_S) before the
413 goes out, as nginx's lingering close does: clients such as httpx, requests and curl
write the whole body before they read, and a server that closes with their bytes unread
makes the kernel reset the connection, which throws away the 413 on its way (seen: the head
read, its 41-byte body lost). A client that asked `Expect: 100-continue` has sent nothing
yet and is answered at once; so is a body declared past DRAIN_BYTES.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["DRAIN_BYTES", "DRAIN_S", "BodyLimit"]

DRAIN_BYTES = 16 << 20  # of a refused body, read and dropped before the 413
DRAIN_S = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get 413 `{"error": ...}`, nothing else runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            if (
                declared.isdigit()
                and int(declared) <= DRAIN_BYTES
                and headers.get(b"expect", b"").lower() != b"100-continue"
            ):
                await _drain(receive)
            await self._refuse(send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _drain(receive, size)
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"request body over {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, read: int = 0) -> None:
    """Read and drop the rest of a refused body: up to DRAIN_BYTES in all, for DRAIN_S."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            while read <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                read += len(message.get("body", b""))
