"""The upstream client interface: how the gateway POSTs a request to a model server.

The client dominates a Python gateway's cost, so it sits behind this small interface and
can be swapped (`gateway.upstream_client`): aiohttp's ClientSession, or a thinner
keep-alive client on httptools.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, AnyStr

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HOP_BY_HOP",
    "HOP_BY_HOP_BYTES",
    "RESPONSE_NOT_FORWARDED",
    "Answered",
    "RequestHeaders",
    "UpstreamClient",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamTooLarge",
    "UpstreamUnreachable",
    "UpstreamUnreachableTimeout",
    "end_to_end_lines",
    "end_to_end_raw",
    "split_head",
]

# A model server's answer is read whole (to log and judge it); past this many bytes, decoded,
# it is refused: a broken or hostile candidate or shadow must not take the gateway's memory.
DEFAULT_MAX_RESPONSE_BYTES = 64 << 20

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
CONNECTION_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip

# Of a request, besides those: the ones the client sets itself. Accept-Encoding is dropped
# so the upstream answers in identity encoding: the gateway must be able to read the
# prediction it logs.
HOP_BY_HOP = CONNECTION_HEADERS | {"host", "content-length", "accept-encoding", "expect"}

HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)

# Of a response, besides those: Content-Length (the gateway's server sets it for the body
# it sends) and Content-Encoding (both clients hand over the decoded body).
RESPONSE_NOT_FORWARDED = CONNECTION_HEADERS | {"content-length", "content-encoding"}

Headers = Iterable[tuple[str, str]]
# `post_soon`'s callback: (its context, the response or None, the error or None)
Answered = Callable[[Any, "UpstreamResponse | None", "BaseException | None"], None]


def end_to_end(headers: Headers, dropped: frozenset[str]) -> list[tuple[str, str]]:
    """`headers` without those in `dropped` (lower-case, including "connection") and those
    the Connection header names (RFC 9110 7.6.1: they are hop-by-hop too). One pass: this
    runs twice per request."""
    return _end_to_end(headers, dropped, "connection", ",")


def _end_to_end(
    headers: Iterable[tuple[AnyStr, AnyStr]],
    dropped: frozenset[AnyStr],
    connection: AnyStr,
    comma: AnyStr,
) -> list[tuple[AnyStr, AnyStr]]:
    """`end_to_end` for str or byte pairs (`connection` and `comma` of the same type)."""
    kept: list[tuple[AnyStr, AnyStr]] = []
    named: list[AnyStr] = []
    for k, v in headers:
        lower = k.lower()
        if lower in dropped:
            if lower == connection:
                named.append(v)
        else:
            kept.append((k, v))
    if not named:
        return kept
    also = {t.strip().lower() for v in named for t in v.split(comma)}
    return [(k, v) for k, v in kept if k.lower() not in also]


_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


def end_to_end_lines(head: bytes, dropped: frozenset[bytes]) -> bytes:
    """The header lines of a raw response `head` (CRLF apart, as `UpstreamResponse.raw_head`)
    without those named in `dropped` (lower case, including b"connection") and those the
    Connection header names: each kept line as received, CRLF-terminated. What `end_to_end`
    does for pairs, without decoding a header the gateway only passes on (the parser that
    delimited the head refused bare CR or LF and folded lines, so each line is one header)."""
    kept: list[bytes] = []
    named: list[bytes] = []
    for line in head.split(b"\r\n"):
        colon = line.find(b":")
        if colon < 0:
            continue  # (an empty head)
        lower = line[:colon].lower()
        if lower in dropped:
            if lower == b"connection":
                value = line[colon + 1 :].strip().lower()
                if value not in _PLAIN_CONNECTION:  # (the usual value names no header)
                    named.append(value)
            continue
        kept.append(line)
    if named:
        also = {t.strip() for v in named for t in v.split(b",")}
        kept = [line for line in kept if line[: line.find(b":")].lower() not in also]
    if not kept:
        return b""
    kept.append(b"")
    return b"\r\n".join(kept)


_RAW_NAMES: dict[frozenset[str], frozenset[bytes]] = {}


def _raw_names(names: frozenset[str]) -> frozenset[bytes]:
    """`names` as bytes, for filtering raw pairs (the sets come from config: a few)."""
    raw = _RAW_NAMES.get(names)
    if raw is None:
        raw = frozenset(n.encode("utf-8", "surrogateescape") for n in names)
        if len(_RAW_NAMES) < 64:
            _RAW_NAMES[names] = raw
    return raw


def end_to_end_raw(
    headers: list[tuple[bytes, bytes]], dropped: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """`end_to_end` for (name, value) byte pairs, as a server's parser gives them."""
    return _end_to_end(headers, dropped, b"connection", b",")


class RequestHeaders:
    """One request's end-to-end headers, encoded once for every upstream call that sends
    them: the production call, a failover's retry and the mirror copies (whose own variant,
    `without`, is also made once). Iterating yields the (name, value) pairs, so it is
    `Headers` to any client; a client that writes HTTP/1.1 itself takes `encoded()`."""

    __slots__ = ("_encoded", "_pairs", "_parent", "_raw", "_suffix", "_variant", "_variant_of")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs: list[tuple[str, str]] | None = pairs
        self._raw: list[tuple[bytes, bytes]] | None = None
        self._encoded: bytes | None = None
        self._parent: RequestHeaders | None = None  # encoded as the parent's block + suffix
        self._suffix = b""
        self._variant: RequestHeaders | None = None
        self._variant_of: tuple[frozenset[str], RequestHeaders | None] | None = None

    @classmethod
    def from_raw(cls, raw: list[tuple[bytes, bytes]]) -> RequestHeaders:
        """From (name, value) byte pairs as the client sent them: encoded as they are, and
        decoded (as aiohttp's server decodes them) only for a client that takes pairs."""
        headers = cls([])
        headers._pairs = None
        headers._raw = raw
        return headers

    @property
    def pairs(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            assert self._raw is not None
            self._pairs = [
                (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for k, v in self._raw
            ]
        return self._pairs

    def _as_raw(self) -> list[tuple[bytes, bytes]]:
        if self._raw is not None:
            return self._raw
        return [
            (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for k, v in self.pairs
        ]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self._raw) if self._raw is not None else len(self.pairs)

    def encoded(self) -> bytes:
        """The header lines, `Name: value\r\n` each, as the upstream receives them."""
        if self._encoded is None:
            if self._parent is not None:
                self._encoded = self._parent.encoded() + self._suffix
                # the parent keeps this variant (`without`): without the link back, both are
                # freed by reference counting, not left for the cyclic collector, which ran
                # ~50 times a second under a 100% mirror for this garbage alone
                self._parent = None
            elif self._raw is not None:
                self._encoded = b"".join([b"%s: %s\r\n" % pair for pair in self._raw])
            else:
                self._encoded = encode_headers(self.pairs)
        return self._encoded

    def without(
        self, dropped: frozenset[str], added: RequestHeaders | None = None
    ) -> RequestHeaders:
        """These headers less those named in `dropped` (lower case), then `added`'s. Kept:
        a request's copies all ask for the same variant, filtered and encoded once; when it
        drops none of these headers, its block is this one's with `added`'s appended, so
        the headers are encoded once in all."""
        of = (dropped, added)
        variant = self._variant
        if variant is None or self._variant_of != of:
            raw = self._raw
            if raw is not None:  # filtered as bytes: nothing decoded
                dropped_raw = _raw_names(dropped)
                kept_raw = [(k, v) for k, v in raw if k.lower() not in dropped_raw]
                dropped_none = len(kept_raw) == len(raw)
                if added is not None:
                    kept_raw += added._as_raw()
                variant = RequestHeaders.from_raw(kept_raw)
            else:
                pairs = self.pairs
                kept = [(k, v) for k, v in pairs if k.lower() not in dropped]
                dropped_none = len(kept) == len(pairs)
                if added is not None:
                    kept += added.pairs
                variant = RequestHeaders(kept)
            if dropped_none:
                variant._parent = self
                variant._suffix = b"" if added is None else added.encoded()
            self._variant, self._variant_of = variant, of
        return variant


def encode_headers(headers: Headers) -> bytes:
    """`Name: value\r\n` lines. aiohttp's server decodes header bytes as UTF-8 with
    surrogateescape: this re-encodes them to the bytes the client sent, whatever they were."""
    return "".join([f"{k}: {v}\r\n" for k, v in headers]).encode("utf-8", "surrogateescape")


class UpstreamResponse:
    """An upstream's answer: status, decoded body and every header as received.

    A client that has the raw head (`from_head`) hands it over as it is: the headers are
    split and decoded only when asked for (the gateway passes production's back; of a
    mirror copy's it looks for one, which `header` finds in the bytes)."""

    __slots__ = ("_head", "_headers", "body", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.body = body
        self._headers: list[tuple[str, str]] | None = headers
        self._head: bytes | None = None

    @classmethod
    def from_head(cls, status: int, body: bytes, head: bytes) -> UpstreamResponse:
        """With `head` the header lines as received (CRLF apart, no status line, no blank
        line), parsed on first use."""
        response = cls.__new__(cls)
        response.status = status
        response.body = body
        response._head = head
        response._headers = None
        return response

    @property
    def raw_head(self) -> bytes | None:
        """The header lines as received (see `from_head`); None from a client that hands
        over parsed headers."""
        return self._head

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header of the response, as received, in order."""
        if self._headers is None:
            self._headers = split_head(self._head or b"")
        return self._headers

    @property
    def content_type(self) -> str:
        """The Content-Type header's value, "" when absent."""
        return self.header("Content-Type") or ""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), None when absent."""
        if self._headers is None and self._head is not None:
            lowered = b"\n" + self._head.lower()
            at = lowered.find(b"\n" + name.lower().encode("latin-1") + b":")
            if at < 0:
                return None  # the usual answer, without splitting the head
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    def __repr__(self) -> str:
        return f"UpstreamResponse({self.status}, {len(self.body)} bytes)"


def split_head(head: bytes) -> list[tuple[str, str]]:
    """CRLF-separated header lines to (name, value) pairs, values without surrounding
    whitespace (the parser that delimited the head refused folded lines)."""
    pairs = []
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            pairs.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return pairs


class UpstreamError(Exception):
    """No usable response arrived; `error_class` is what the prediction log records.
    `unreachable`: no connection could be made (refused, or the connect timed out), so
    the upstream never saw the request (the mirror then leaves that target alone a while)."""

    error_class = "connection"
    unreachable = False


class UpstreamTimeout(UpstreamError):
    error_class = "timeout"


class UpstreamConnectionError(UpstreamError):
    error_class = "connection"


class UpstreamUnreachable(UpstreamConnectionError):
    """The connect was refused or failed (no process on the port, no route to the host)."""

    unreachable = True


class UpstreamUnreachableTimeout(UpstreamTimeout):
    """The connect did not complete in time (a host that drops the connect's packets)."""

    unreachable = True


class UpstreamTooLarge(UpstreamConnectionError):
    """The answer (after decoding) was larger than the client's `max_response_bytes`."""

    error_class = "too_large"


class UpstreamClient(ABC):
    """POSTs bodies to model servers over pooled keep-alive connections.

    `max_response_bytes` bounds an answer's body after decoding (UpstreamTooLarge past it).
    """

    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @abstractmethod
    async def post(
        self, url: str, body: bytes, headers: Headers, timeout: float
    ) -> UpstreamResponse:
        """POST `body` to the absolute `url`; any HTTP status is a response, not an error.

        `headers` are end-to-end headers to forward (hop-by-hop ones already removed).
        Raises UpstreamTimeout when no complete response arrives within `timeout` seconds and
        UpstreamConnectionError when the connection fails or the response is malformed.
        """

    def post_soon(
        self,
        url: str,
        body: bytes,
        headers: Headers,
        timeout: float,
        answered: Answered,
        context: Any,
    ) -> None:
        """`post` without awaiting it, for calls whose answer nobody waits for (the mirror's
        copies): `answered(context, response, None)` or `answered(context, None, error)`
        is called once, later, never from within this call. `close` stops the calls still
        in flight; their callbacks may then not be called at all.

        This default runs `post` in a task; a client can do it with less (no task, no
        future: `HttptoolsClient`)."""
        task = asyncio.ensure_future(self.post(url, body, headers, timeout))
        task.add_done_callback(lambda done: _report(done, answered, context))

    @abstractmethod
    async def get(self, url: str, headers: Headers, timeout: float) -> UpstreamResponse:
        """GET the absolute `url` (health, readiness, metadata); errors as for `post`."""

    @abstractmethod
    async def close(self) -> None:
        """Close every pooled connection; idempotent."""


def _report(task: asyncio.Future[UpstreamResponse], answered: Answered, context: Any) -> None:
    """A finished `post` task's outcome to its `post_soon` callback (none when cancelled)."""
    if task.cancelled():
        return
    error = task.exception()
    answered(context, None if error is not None else task.result(), error)
