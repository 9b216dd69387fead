"""A thin keep-alive HTTP/1.1 client on asyncio protocols and the httptools parser.

It does only what the gateway needs (POST a body or GET, read status, headers and body) and
so costs a fraction of a general client per request: no middleware, no cookie or redirect
handling, request heads assembled from precomputed bytes. Connections are pooled per host
and reused while the upstream keeps them alive. It is the gateway's default client, so it
also covers what an upstream may do that a general client handles: https:// upstreams
(verified against the system's CAs unless given an SSL context), interim 1xx responses
(skipped) and a compressed body sent despite the gateway dropping Accept-Encoding (decoded).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools

from coalmine.gateway.upstream.base import (
    Answered,
    Headers,
    RequestHeaders,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
    UpstreamUnreachableTimeout,
    encode_headers,
)

__all__ = ["HttptoolsClient"]

_Key = tuple[str, int, bool]  # host, port, TLS
_Target = tuple[_Key, bytes]  # b"POST /path HTTP/1.1\r\nHost: ..\r\n"

# zlib's wbits for each Content-Encoding it decodes (+32 = gzip or zlib header, auto)
_DECODERS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": 0}
# how often requests are checked against their deadlines (HttptoolsClient._watch)
_SWEEP_S = 0.01
# the head's last line by body length: a model's requests come in few distinct lengths
_CONTENT_LENGTH: dict[int, bytes] = {}


def _content_length(n: int) -> bytes:
    line = _CONTENT_LENGTH.get(n)
    if line is None:
        line = b"Content-Length: %d\r\n\r\n" % n
        if len(_CONTENT_LENGTH) < 4096:
            _CONTENT_LENGTH[n] = line
    return line


class _StaleConnection(UpstreamConnectionError):
    """The connection closed before any byte of the response: safe to retry on a new one."""


class _Connection(asyncio.Protocol):
    """One upstream connection; carries one request at a time.

    Its outcome goes to whoever asked: an awaited future (`send`), or the client's
    `_settled` with the caller's callback (`send_soon`: no future, no task).
    """

    __slots__ = (
        "_active",
        "_answered",
        "_body",
        "_chunked_or_sized",
        "_client",
        "_content_encoding",
        "_context",
        "_got_bytes",
        "_head",
        "_head_start",
        "_limit",
        "_loop",
        "_parser",
        "_raw",
        "_size",
        "_waiter",
        "closed",
        "deadline",
        "keep_alive",
        "key",
        "message",
        "timeout",
        "transport",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limit: int, client: HttptoolsClient, key: _Key
    ) -> None:
        self._loop = loop
        self._limit = limit  # bytes of body, encoded here and decoded in _decode
        self._client = client
        self.key = key
        self._size = 0
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._active = False  # a request is out and its outcome not yet settled
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._answered: Answered | None = None
        self._context: Any = None
        self.message: tuple[bytes, ...] = ()  # of a send_soon request, to retry it elsewhere
        self.timeout = 0.0
        self.deadline = 0.0  # loop time by which the response must be complete
        self._body: list[bytes] = []
        self._raw = b""  # what arrived of the response until its final head is complete
        self._head_start = 0  # where in _raw the response (or the next after a 1xx) begins
        self._head: bytes | None = None  # the final response's header lines, as received
        self._content_encoding = b""
        self._got_bytes = False
        self._chunked_or_sized = False
        self.closed = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._head is None:  # kept until the head is complete (on_headers_complete)
            self._raw = self._raw + data if self._raw else data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"malformed upstream response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._active:
            return
        if self._head is not None and not self._chunked_or_sized:
            # a response delimited by the connection closing is complete now
            self.on_message_complete()
        elif self._got_bytes:
            self._fail(UpstreamConnectionError("upstream closed the connection mid-response"))
        else:
            self._fail(_StaleConnection("upstream closed the connection"))

    # httptools callbacks: no on_header; the head is taken whole from the bytes received
    def on_headers_complete(self) -> None:
        # httptools (strict) has checked that lines end with CRLF and none is folded
        raw, start = self._raw, self._head_start
        end = raw.find(b"\r\n\r\n", start)
        after_status_line = raw.find(b"\r\n", start) + 2
        self._head_start = end + 4
        if self._parser.get_status_code() < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the final follows
        head = raw[after_status_line:end] if after_status_line <= end else b""
        self._head = head
        self._raw = b""
        lowered = b"\n" + head.lower()
        self._chunked_or_sized = (
            b"\ncontent-length:" in lowered or b"\ntransfer-encoding:" in lowered
        )
        at = lowered.find(b"\ncontent-encoding:")
        if at >= 0:
            line_end = lowered.find(b"\n", at + 1)
            self._content_encoding = lowered[at + 18 : None if line_end < 0 else line_end].strip()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:
            if not self.closed:
                self._fail(UpstreamTooLarge(f"answer over {self._limit} bytes"))
                self.abort()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._active:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim: its head was skipped, it has no body
            self._body = []
            self._size = 0
            return
        self.keep_alive = self._parser.should_keep_alive()
        chunks = self._body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._content_encoding and self._content_encoding != b"identity":
            try:
                body = _decode(body, self._content_encoding, self._limit)
            except UpstreamTooLarge as exc:
                self.keep_alive = False
                self._settle(None, exc)
                return
            except (zlib.error, ValueError) as exc:
                self.keep_alive = False
                self._settle(None, UpstreamConnectionError(f"undecodable upstream body: {exc}"))
                return
        assert self._head is not None
        self._settle(UpstreamResponse.from_head(status, body, self._head), None)

    # the client's side
    def _start(self, message: tuple[bytes, ...], timeout: float) -> None:
        """Write the request, whose `message` is its pieces in order (head lines, body), in
        one call: one system call (writev) and no copy of the body."""
        self._active = True
        self.timeout = timeout
        self._body = []
        self._size = 0
        self._raw = b""
        self._head_start = 0
        self._head = None
        self._content_encoding = b""
        self._got_bytes = self._chunked_or_sized = False
        self.deadline = self._loop.time() + timeout
        self._client._watch(self)
        assert self.transport is not None
        self.transport.writelines(message)

    def send(self, message: tuple[bytes, ...], timeout: float) -> asyncio.Future[UpstreamResponse]:
        """Send the request; its outcome is the future's."""
        self._waiter = waiter = self._loop.create_future()
        self._start(message, timeout)
        return waiter

    def send_soon(
        self, message: tuple[bytes, ...], timeout: float, answered: Answered, context: Any
    ) -> None:
        """Send the request; its outcome goes to the client's `_settled` with `answered`."""
        self._waiter = None
        self._answered, self._context, self.message = answered, context, message
        self._start(message, timeout)

    def _settle(self, response: UpstreamResponse | None, error: UpstreamError | None) -> None:
        """The request's outcome, once: later events (a close after an error) are ignored."""
        if not self._active:
            return
        self._active = False
        self._client._busy.discard(self)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # else cancelled by its caller, who aborts this connection
                if error is None:
                    waiter.set_result(response)  # type: ignore[arg-type]
                else:
                    waiter.set_exception(error)
            return
        answered, context = self._answered, self._context
        self._answered = self._context = None
        assert answered is not None
        self._client._settled(self, response, error, answered, context)

    def time_out(self) -> None:
        self._fail(UpstreamTimeout(f"no complete response within {self.timeout}s"))
        self.abort()

    def _fail(self, exc: UpstreamError) -> None:
        self._settle(None, exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    """`body` decompressed, at most `limit` bytes of it: a few KB of gzip can expand to GBs."""
    decoder = zlib.decompressobj(wbits)
    out = decoder.decompress(body, limit + 1)
    if len(out) > limit or decoder.unconsumed_tail:
        raise UpstreamTooLarge(f"answer over {limit} bytes once decoded")
    return out + decoder.flush()


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes:
    wbits = _DECODERS.get(encoding)
    if wbits is None:
        raise ValueError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")
    if wbits == 0:  # "deflate" is zlib-wrapped by the RFC, raw deflate by some servers
        try:
            return _inflate(body, zlib.MAX_WBITS, limit)
        except zlib.error:
            return _inflate(body, -zlib.MAX_WBITS, limit)
    return _inflate(body, wbits, limit)


class HttptoolsClient(UpstreamClient):
    def __init__(
        self,
        *,
        max_idle_per_host: int = 512,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[_Key, deque[_Connection]] = {}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._max_idle = max_idle_per_host
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context  # None: the system's CAs, made on the first https:// upstream
        self._closed = False
        self._busy: set[_Connection] = set()  # with a request out
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[UpstreamResponse]] = set()  # post_soon's slow path

    def _target(self, method: str, url: str) -> _Target:
        target = self._targets.get((method, url))
        if target is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamConnectionError(f"{url}: only http:// and https:// URLs")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            host_header = parts.netloc
            head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
            target = ((parts.hostname, port, tls), head)
            if len(self._targets) < 4096:  # paths come from the route table: a small set
                self._targets[(method, url)] = target
        return target

    async def _connect(self, key: _Key, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port, tls = key
        context: ssl.SSLContext | None = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(min(timeout, self._connect_timeout)):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop, self.max_response_bytes, self, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamUnreachableTimeout(f"connect to {host}:{port} timed out") from exc
        except ssl.SSLError as exc:  # a failed certificate check: the host did answer
            raise UpstreamConnectionError(f"connect to {host}:{port}: {exc}") from exc
        except OSError as exc:  # refused, no route, name not resolved
            raise UpstreamUnreachable(f"connect to {host}:{port}: {exc}") from exc
        if self._closed:  # closed while connecting
            protocol.abort()
            raise UpstreamConnectionError("client is closed")
        return protocol

    async def post(
        self, url: str, body: bytes, headers: Headers, timeout: float
    ) -> UpstreamResponse:
        # not through _request or _exchange: no coroutine to start and resume on the
        # request path, where an idle keep-alive connection is the usual case
        if self._closed:
            raise UpstreamConnectionError("client is closed")
        key, message = self._message("POST", url, body, headers)
        conn = self._idle_connection(key)
        if conn is None:
            return await self._exchange(key, message, timeout)
        try:
            response = await conn.send(message, timeout)
        except _StaleConnection:
            # the upstream closed it while idle, so it never saw the request: another
            return await self._exchange(key, message, timeout)
        except BaseException:
            conn.abort()  # cancelled or failed mid-request: the connection is unusable
            raise
        self._release(conn)
        return response

    async def get(self, url: str, headers: Headers, timeout: float) -> UpstreamResponse:
        return await self._request("GET", url, b"", headers, timeout)

    def _watch(self, conn: _Connection) -> None:
        """Times `conn`'s request out at its deadline. One sweep every `_SWEEP_S` over the
        connections with a request out, rather than a timer per request (a libuv timer
        started and stopped per call cost ~2.5 µs of the ~15 µs a call costs): a request
        times out between `timeout` and `timeout` + `_SWEEP_S` seconds."""
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweeper = conn._loop.call_later(_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        busy = self._busy
        if not busy:
            self._sweeper = None
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [conn for conn in busy if conn.deadline <= now]:
            conn.time_out()
        self._sweeper = loop.call_later(_SWEEP_S, self._sweep)

    def _message(
        self, method: str, url: str, body: bytes, headers: Headers
    ) -> tuple[_Key, tuple[bytes, ...]]:
        key, request_line = self._target(method, url)
        # a request's headers are encoded once for its production call and mirror copies
        block = headers.encoded() if type(headers) is RequestHeaders else encode_headers(headers)
        return key, (request_line, block, _content_length(len(body)), body)

    async def _request(
        self, method: str, url: str, body: bytes, headers: Headers, timeout: float
    ) -> UpstreamResponse:
        if self._closed:
            raise UpstreamConnectionError("client is closed")
        key, message = self._message(method, url, body, headers)
        return await self._exchange(key, message, timeout)

    def _idle_connection(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                return candidate
        return None

    def _release(self, conn: _Connection) -> None:
        """Back to the pool when the upstream keeps it alive, else closed."""
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        if conn.keep_alive and not conn.closed and len(idle) < self._max_idle and not self._closed:
            idle.append(conn)
        else:
            conn.abort()

    async def _exchange(
        self, key: _Key, message: tuple[bytes, ...], timeout: float
    ) -> UpstreamResponse:
        while True:
            conn = self._idle_connection(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, timeout)
            try:
                response = await conn.send(message, timeout)
            except _StaleConnection:
                # the upstream closed an idle keep-alive connection: it never saw the request
                if reused:
                    continue
                raise
            except BaseException:
                conn.abort()  # cancelled or failed mid-request: the connection is unusable
                raise
            self._release(conn)
            return response

    def post_soon(
        self,
        url: str,
        body: bytes,
        headers: Headers,
        timeout: float,
        answered: Answered,
        context: Any,
    ) -> None:
        """On an idle keep-alive connection (the usual case) the request is written now and
        the connection reports its outcome: no task and no future. Else (a connection to
        open, a stale one to replace) a task does what `post` does."""
        try:
            if self._closed:
                raise UpstreamConnectionError("client is closed")
            key, message = self._message("POST", url, body, headers)
        except UpstreamError as exc:
            asyncio.get_running_loop().call_soon(answered, context, None, exc)
            return
        conn = self._idle_connection(key)
        if conn is None:
            self._exchange_soon(key, message, timeout, answered, context)
            return
        conn.send_soon(message, timeout, answered, context)

    def _settled(
        self,
        conn: _Connection,
        response: UpstreamResponse | None,
        error: UpstreamError | None,
        answered: Answered,
        context: Any,
    ) -> None:
        """A `send_soon` request's outcome (from its connection, never within `post_soon`)."""
        if error is None:
            self._release(conn)
        elif isinstance(error, _StaleConnection) and not self._closed:
            # a pooled connection the upstream had closed: it never saw the request
            self._exchange_soon(conn.key, conn.message, conn.timeout, answered, context)
            return
        else:
            conn.abort()
        # handled after what is already ready, not now: when a production answer came in
        # the same poll (a mirror copy's often does), its request resumes and its client's
        # answer is written first; the copy's outcome (its record, the next copy) can wait
        conn._loop.call_soon(answered, context, response, error)

    def _exchange_soon(
        self,
        key: _Key,
        message: tuple[bytes, ...],
        timeout: float,
        answered: Answered,
        context: Any,
    ) -> None:
        task = asyncio.ensure_future(self._exchange(key, message, timeout))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._exchanged(done, answered, context))

    def _exchanged(
        self, task: asyncio.Future[UpstreamResponse], answered: Answered, context: Any
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled():  # by close: nobody waits for it any more
            return
        error = task.exception()
        answered(context, None if error is not None else task.result(), error)

    async def close(self) -> None:
        """Closes every connection, pooled or busy with a `post_soon` request (whose
        callback is then called with the error or not at all)."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().abort()
        self._idle.clear()
        for conn in list(self._busy):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
