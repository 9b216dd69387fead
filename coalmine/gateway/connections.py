"""The gateway's client connections: timeouts, a connection cap, quiet malformed requests.

The rules both servers keep (the cap, the canned answers, one quiet line per malformed
request), and aiohttp's low-level server tightened to them for a data plane any client can
reach (`protocol_server` keeps the same rules its own way):

- keep-alive: a connection idle for `keepalive_timeout_s` is closed; aiohttp's timer starts
  at accept, so a client that connects and never sends a byte is closed too;
- head: once the first byte of a request arrives, the rest of its head (request line and
  headers) must follow within `header_timeout_s`, else a 408 and the connection is closed;
- body: the request path reads bodies under `body_timeout_s` (`Gateway.read_body`);
- cap: past `connection_cap` open connections a new one is answered 503 and closed at once,
  so a flood of sockets cannot take the file descriptors the store, the upstreams and (in
  `coalmine serve`) the control plane need;
- a malformed request is one WARNING line (rate-limited), not a traceback at ERROR: any
  client can send one at will.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from coalmine.gateway.metrics import REJECTED
from coalmine.log.throttle import ThrottledLog

__all__ = [
    "BUSY", "HEAD_TIMEOUT", "ConnectionLimits", "GatewayServer", "connection_cap", "fd_limit",
    "log_malformed", "raise_fd_limit", "refuse_over_cap",
]  # fmt: skip

log = logging.getLogger(__name__)
_throttled = ThrottledLog(log)


def _canned(status: str, message: str) -> bytes:
    """A whole response, for connections the handler never sees; the connection closes."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


BUSY = _canned("503 Service Unavailable", "too many connections; retry later")
HEAD_TIMEOUT = _canned("408 Request Timeout", "request head not received in time")


def refuse_over_cap(transport: Any, open_connections: int) -> None:
    """Answer a connection past the cap with 503 and close it (counted, one quiet line)."""
    REJECTED.labels("connection_cap").inc()
    _throttled.warning(
        "cap",
        "gateway at its connection cap (%d open): refusing new connections with 503",
        open_connections,
    )
    transport.write(BUSY)
    transport.close()


def log_malformed(peer: Any, exc: BaseException) -> None:
    """A client's malformed request is not the gateway's fault: one line, rate-limited."""
    REJECTED.labels("malformed").inc()
    # its text may quote the client's bytes over several lines: one line, bounded
    reason = " ".join(str(getattr(exc, "message", "") or exc).split())[:200]
    _throttled.warning("malformed", "malformed HTTP request from %s: %s", peer, reason or type(exc))


def fd_limit() -> int | None:
    """This process's soft limit on open file descriptors; None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit() -> None:
    """Raise the soft descriptor limit to the hard one, as servers do: the default soft limit
    (often 1,024) is a shell's, not a proxy's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. a container that forbids it
            log.info("could not raise the file-descriptor limit from %s: %s", soft, exc)


def connection_cap(configured: int, limit: int | None) -> int:
    """Client connections one gateway process may hold open.

    A quarter of the descriptor limit (at least 32) stays in reserve for the store, log
    files and the control plane; of the rest, half, because each client connection may hold
    an upstream connection too.
    """
    if limit is None:
        return configured
    reserve = max(32, limit // 4)
    return max(1, min(configured, (limit - reserve) // 2))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float


class _Connection(RequestHandler):
    """One client connection: aiohttp's handler plus the cap and the head deadline."""

    __slots__ = ("_head_timer", "_limits", "_refused", "_server")

    def __init__(self, server: GatewayServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._server = server
        self._limits = server.limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server.open_connections >= self._limits.max_connections:
            self._refused = True
            refuse_over_cap(transport, server.open_connections)
            return
        server.open_connections += 1
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return  # never registered with the server
        self._server.open_connections -= 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_timer is None and self._between_requests():
            # the first bytes of a new request: its whole head must follow in time
            self._head_timer = self._loop.call_later(
                self._limits.header_timeout_s, self._head_overdue
            )
        heads = self._request_count
        super().data_received(data)
        if self._head_timer is not None and self._request_count != heads:
            self._head_timer.cancel()  # a complete head arrived
            self._head_timer = None

    def _between_requests(self) -> bool:
        # no request being served and none parsed waiting to be: bytes now begin a new head
        return not self._request_in_progress and not self._messages

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self._between_requests():
            return  # a request is being served: its body has its own deadline
        REJECTED.labels("header_timeout").inc()
        if self.transport is not None:
            self.transport.write(HEAD_TIMEOUT)
        self.force_close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            log_malformed(self.peername, exc)
            return
        super().log_exception(*args, **kwargs)


class GatewayServer(web.Server):
    """aiohttp's low-level server making `_Connection`s, counting those open."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.open_connections = 0

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)
