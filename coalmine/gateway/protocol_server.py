"""The gateway's HTTP/1.1 server: an asyncio Protocol per connection, httptools' parser.

No framework on the request path: bytes go to httptools (llhttp), its callbacks build a
`wire.Request` and collect the body, `Gateway.dispatch` answers, and the answer goes out as
one `wire.encode_head` head plus the body. What a data plane reachable by any client needs:

- keep-alive, and pipelined requests answered in the order they came; reading pauses while
  a request waits behind another (a pipelining client cannot queue more than that) and
  while the transport's write buffer is over its high mark;
- bodies with Content-Length or chunked (httptools decodes the chunks); a body over
  `max_body_bytes` is a 413, by its Content-Length before a byte of it is read, or as a
  chunked one streams past the limit; the rest of it is read and dropped for a while
  ("lingering") so the client sees the 413 rather than a reset, then the connection closes;
- `Expect: 100-continue` answered (after the answers owed before it, pipelining or not);
- deadlines: a head must arrive whole within `header_timeout_s` of its first byte (408), a
  body within `body_timeout_s` of its head (408), and an idle connection is closed after
  `keepalive_timeout_s` (counted from accept, so a silent client is closed too). One sweep
  a fraction of the shortest deadline checks them all: no timer is made per request;
- a malformed request is a 400 and the connection closes, with one quiet log line; never a
  500 and never a crash; an unexpected error of the gateway's own is a 500 for that request;
- the connection cap of `connections.py` (503 past it);
- a client that goes away mid-request: its request is still served to the end (and
  logged), the answer dropped, and nothing else is affected;
- graceful stop (`cleanup`): stop accepting, close idle connections, let in-flight requests
  finish (their answers say `Connection: close`), then `Gateway.stop()` drains the mirror
  and flushes the prediction log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import httptools
from sqlalchemy import Engine

from coalmine.gateway.app import Gateway
from coalmine.gateway.connections import (
    HEAD_TIMEOUT,
    ConnectionLimits,
    log_malformed,
    refuse_over_cap,
)
from coalmine.gateway.metrics import REJECTED
from coalmine.gateway.wire import Answer, Request, encode_head, json_answer

__all__ = ["ProtocolRunner", "start_protocol"]

log = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SMALL = 1 << 16  # bodies up to this are joined to their head: one write, one syscall
_LINGER_S = 10.0  # the most time spent reading and dropping a refused body
_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0), "0.9": (0, 9)}
# httptools buffers a head without bound: these bound it (aiohttp's server: 8190 a line)
MAX_FIELD_BYTES = 8190  # the request line, or one header's name and value
MAX_HEAD_BYTES = 64 << 10  # the whole head

# what the connection's parser is waiting for; each but _BUSY has a deadline
_BUSY = 0  # nothing with a deadline: between requests while one is served
_IDLE = 1  # the next request (keep-alive)
_HEAD = 2  # the rest of a request's head
_BODY = 3  # the rest of a request's body
_LINGER = 4  # the rest of a refused body, dropped
_DRAIN = 5  # answered and half-closed: whatever the client still sends, dropped
_DRAIN_S = 2.0  # how long a half-closed connection waits for the client to close it


def _malformed() -> Answer:
    answer = json_answer({"error": "malformed HTTP request"}, 400)
    answer.close = True
    return answer


def _head_too_large() -> Answer:
    REJECTED.labels("head_too_large").inc()
    answer = json_answer(
        {
            "error": f"request head over its bound ({MAX_FIELD_BYTES} bytes a line, "
            f"{MAX_HEAD_BYTES} in all)"
        },
        431,
    )
    answer.close = True
    return answer


def _internal_error() -> Answer:
    return json_answer({"error": "internal gateway error"}, 500)


# an item of a connection's queue: a request with its body to dispatch, or an answer
# already decided (413, 408, 400) to send in its turn
_Item = tuple[Request | None, bytes, Answer | None]


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_closed",
        "_continue_owed",
        "_deadline",
        "_discarding",
        "_head_bytes",
        "_headers",
        "_idle",
        "_loop",
        "_parser",
        "_paused_reading",
        "_paused_writing",
        "_queue",
        "_request",
        "_server",
        "_serving",
        "_size",
        "_state",
        "_task",
        "_url",
        "transport",
    )

    def __init__(self, server: ProtocolServer) -> None:
        self._server = server
        self._loop = server.loop
        self.transport: Any = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._request: Request | None = None
        self._queue: deque[_Item] = deque()
        self._task: asyncio.Task[None] | None = None  # serves the requests, one at a time
        self._serving = False  # a request (or a refusal) is being answered
        self._idle: asyncio.Future[None] | None = None  # the task's wait for the next one
        self._state = _IDLE
        self._deadline = 0.0
        self._discarding = False  # a refused body, or bytes after a malformed request
        self._continue_owed = False
        self._closed = False
        self._paused_reading = False
        self._paused_writing = False

    # transport callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if len(server.connections) >= server.limits.max_connections:
            self._closed = True
            refuse_over_cap(transport, len(server.connections))
            return
        self.transport = transport
        server.connections.add(self)
        self._state = _IDLE
        self._deadline = self._loop.time() + server.keepalive_timeout
        if server.stopping:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused at the cap: never counted
        self._server.connections.discard(self)
        self._closed = True
        self.transport = None
        if self._idle is not None:
            self._idle.cancel()  # the connection's task ends
        # a request being served is served to the end (and logged); only its answer is lost
        if not self._serving:
            self._queue.clear()

    def pause_writing(self) -> None:
        self._paused_writing = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if not self._serving:
            self._resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._discarding and self._state != _LINGER:
            return  # after a malformed request: nothing more is read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no protocol upgrades (WebSocket, CONNECT): answer what came before, then close
            self._discarding = True
            if self._state == _BUSY:  # the request was read whole: it is answered
                self._finish_then_close()
            else:
                self._refuse(_malformed())
        except httptools.HttpParserError as exc:
            if self._state == _LINGER:
                self._close()  # the rest of a refused body did not parse: enough of it
                return
            if isinstance(exc, httptools.parser.errors.HttpParserCallbackError):
                log.error("HTTP server error reading a request", exc_info=exc.__cause__ or exc)
            else:
                log_malformed(self._peer(), exc)
            self._discarding = True
            self._refuse(_malformed())
            return
        if self._state == _HEAD:  # the head goes on past this read: count it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._discarding = True
                self._refuse(_head_too_large())

    # parser callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._size = 0
        self._request = None
        if not self._discarding:  # (a refused body's, or one pipelined after it: dropped)
            self._state = _HEAD
            self._deadline = self._loop.time() + self._server.limits.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._discarding:
            return
        fields = self._headers
        total = longest = len(self._url)
        for name, value in fields:  # (a loop: cheaper than any() and sum() of generators)
            size = len(name) + len(value)
            total += size
            if size > longest:
                longest = size
        if longest > MAX_FIELD_BYTES or total > MAX_HEAD_BYTES:
            self._discarding = True
            self._refuse(_head_too_large())
            return
        parser = self._parser
        # the header bytes as received: decoded only where the gateway reads them
        request = Request.from_raw(
            parser.get_method().decode("ascii"),
            self._url.decode("utf-8", "surrogateescape"),
            fields,
            _VERSIONS.get(parser.get_http_version(), (1, 1)),
            parser.should_keep_alive(),
        )
        self._request = request
        self._state = _BODY
        self._deadline = self._loop.time() + self._server.body_timeout
        length = request.content_length
        if length is not None and length > self._server.max_body:
            self._refuse_body(request)
        elif request.expects_continue and length != 0:
            if not self._serving and not self._queue:
                self.transport.write(_CONTINUE)
            else:
                self._continue_owed = True  # after the answers owed before it

    def on_body(self, chunk: bytes) -> None:
        if self._discarding:
            return
        self._size += len(chunk)
        if self._size > self._server.max_body:  # chunked: no Content-Length was checked
            assert self._request is not None
            self._refuse_body(self._request)
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._discarding:
            if self._state == _LINGER:
                self._finish_then_close()  # the refused body is all read
            return
        request = self._request
        assert request is not None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._state = _BUSY
        self._enqueue((request, body, None))

    # serving ----------------------------------------------------------------------------
    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        if self._serving:
            self._pause_reading()  # a request waits behind another: read no further
            return
        self._serving = True
        waiter = self._idle
        if waiter is not None:  # the connection's task waits for its next request
            self._idle = None
            waiter.set_result(None)
        elif self._task is None:
            self._task = self._loop.create_task(self._serve())
        # else the task is between two requests: it finds this one queued before it waits

    async def _serve(self) -> None:
        """The connection's one task: answers what is queued, in order, then waits for the
        next request (a task made per request cost more than the wait: a coroutine, the
        task, and its registration in asyncio's set of tasks)."""
        gateway = self._server.gateway
        queue = self._queue
        try:
            while True:
                while queue:
                    request, body, answer = queue[0]
                    if answer is None:
                        assert request is not None
                        try:
                            answer = await gateway.dispatch(request, body)
                        except Exception:
                            log.exception("unhandled error serving %s", request.raw_path)
                            answer = _internal_error()
                    if self._closed:
                        queue.clear()  # the client is gone
                        return
                    queue.popleft()
                    self._write(request, answer)
                    if self._closed:
                        queue.clear()  # that answer closed the connection
                        return
                self._serving = False
                self._served()
                if self._closed:
                    return
                if queue:  # queued while _served() ran
                    continue
                self._idle = idle = self._loop.create_future()
                try:
                    await idle  # until _enqueue sets it
                except asyncio.CancelledError:
                    return  # the connection is lost
        finally:
            self._task = self._idle = None
            self._serving = False

    def _write(self, request: Request | None, answer: Answer) -> None:
        if request is None:
            keep_alive, version, body = False, (1, 1), answer.body
        else:
            keep_alive = request.keep_alive and not answer.close and not self._server.stopping
            version = request.version
            body = b"" if request.method == "HEAD" else answer.body
        head = encode_head(answer, keep_alive=keep_alive, version=version)
        transport = self.transport
        if len(body) <= _SMALL:
            transport.write(head + body)
        else:
            transport.writelines((head, body))  # no copy of a large body
        if not keep_alive:
            if self._state == _LINGER:
                self._queue.clear()  # the refused body is still being read and dropped
            else:
                self._close(drain=True)

    def _served(self) -> None:
        """Every answer owed is sent: read on, and wait for the next request."""
        if self._closed:
            return
        if self._continue_owed:
            self._continue_owed = False
            if self._state == _BODY:
                self.transport.write(_CONTINUE)
        if self._state == _BUSY:
            if self._server.stopping:
                self._close(drain=True)
                return
            self._state = _IDLE
            self._deadline = self._loop.time() + self._server.keepalive_timeout
        if not self._paused_writing:
            self._resume_reading()

    def _refuse(self, answer: Answer) -> None:
        """Send `answer` in its turn (after those owed before it); the connection closes."""
        answer.close = True
        if self._state != _LINGER:
            self._state = _BUSY
        self._enqueue((None, b"", answer))

    def _refuse_body(self, request: Request) -> None:
        """A 413: the answer in its turn; the rest of the body is read and dropped for up
        to _LINGER_S (a client still sending would otherwise get a reset, not the 413)."""
        self._discarding = True
        self._body = []
        answer = self._server.gateway.too_large_answer(request)
        if request.expects_continue:
            self._refuse(answer)  # the client sends no body before a 100: nothing to drop
            return
        self._state = _LINGER
        self._deadline = self._loop.time() + min(self._server.body_timeout, _LINGER_S)
        answer.close = True
        self._enqueue((None, b"", answer))

    def _finish_then_close(self) -> None:
        if not self._serving and not self._queue:
            self._close(drain=True)
        else:
            self._state = _BUSY  # closes after the last answer (keep_alive False)
            self._server_close_after_queue()

    def _server_close_after_queue(self) -> None:
        # the last queued answer must close the connection: mark it so
        if self._queue:
            request, _body, answer = self._queue[-1]
            if answer is not None:
                answer.close = True
            elif request is not None:
                request.keep_alive = False

    # deadlines and stopping -------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Called by the sweep: close or answer a connection past its deadline."""
        state = self._state
        if state == _BUSY or now < self._deadline:
            return
        if state == _HEAD:
            busy = self._serving or bool(self._queue)
            REJECTED.labels("header_timeout").inc()
            if not busy:
                self.transport.write(HEAD_TIMEOUT)
                self._close(drain=True)
            else:
                self._discarding = True
                self._state = _BUSY
                self._server_close_after_queue()
        elif state == _BODY:
            assert self._request is not None
            self._discarding = True
            self._refuse(self._server.gateway.body_timeout_answer(self._request))
        elif state == _LINGER and (self._serving or self._queue):
            self._state = _BUSY  # the 413 is queued behind other answers: it closes
        elif state == _DRAIN:
            self.transport.close()
        else:  # idle, or done lingering
            self._close()

    def stop(self) -> None:
        """Server stopping: close now unless a request is being received or served."""
        if self._state in (_IDLE, _HEAD, _LINGER) and not self._serving and not self._queue:
            self._close()
        else:
            self._server_close_after_queue()

    def _close(self, *, drain: bool = False) -> None:
        """Close; with `drain`, after an answer: send FIN and drop what the client still
        sends until it closes (or _DRAIN_S): closing with its bytes unread would send a
        reset, which can destroy the answer before the client reads it."""
        self._closed = True
        self._state = _BUSY  # no deadline any more
        transport = self.transport
        if transport is None:
            return
        if drain and transport.can_write_eof():
            transport.write_eof()
            self._state = _DRAIN
            self._deadline = self._loop.time() + _DRAIN_S
            self._resume_reading()
        else:
            transport.close()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport else None


class ProtocolServer:
    """Makes a `_Connection` per accepted socket; holds the open ones and the sweep."""

    def __init__(self, gateway: Gateway, limits: ConnectionLimits) -> None:
        settings = gateway.config.gateway
        self.gateway = gateway
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.max_body = gateway.max_body
        self.body_timeout = settings.body_timeout_s
        self.keepalive_timeout = settings.keepalive_timeout_s
        self.connections: set[_Connection] = set()
        self.stopping = False
        shortest = min(limits.header_timeout_s, self.body_timeout, self.keepalive_timeout)
        self.tick = max(0.02, min(1.0, shortest / 4))  # deadlines kept within a quarter

    def __call__(self) -> _Connection:
        return _Connection(self)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = self.loop.time()
            for connection in list(self.connections):
                connection.expire(now)


class ProtocolRunner:
    """A started protocol server; `cleanup()` stops it gracefully (see the module)."""

    def __init__(
        self,
        server: ProtocolServer,
        listener: asyncio.Server,
        engine: Engine,
        shutdown_timeout: float,
    ) -> None:
        self.gateway = server.gateway
        self._server = server
        self._listener = listener
        self._engine = engine
        self._shutdown_timeout = shutdown_timeout
        self._sweep = asyncio.create_task(server.sweep())
        self._done = False

    async def cleanup(self) -> None:
        if self._done:
            return
        self._done = True
        server = self._server
        server.stopping = True
        self._listener.close()  # stop accepting
        for connection in list(server.connections):
            connection.stop()
        loop = server.loop
        deadline = loop.time() + self._shutdown_timeout
        while server.connections and loop.time() < deadline:
            await asyncio.sleep(0.02)  # in-flight requests finish, their connections close
        for connection in list(server.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self._sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweep
        await self.gateway.stop()
        await asyncio.to_thread(self._engine.dispose)


async def start_protocol(
    gateway: Gateway,
    engine: Engine,
    limits: ConnectionLimits,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
) -> tuple[ProtocolRunner, int]:
    """Serve a started `gateway` (SO_REUSEPORT); its runner and bound port."""
    server = ProtocolServer(gateway, limits)
    listener = await server.loop.create_server(server, host, port, reuse_port=True, backlog=4096)
    bound = listener.sockets[0].getsockname()[1] if listener.sockets else port
    return ProtocolRunner(server, listener, engine, shutdown_timeout), bound
