"""What the gateway's request path sees of HTTP, apart from any server: a request, an answer.

`Request` is a parsed request head (the body travels beside it, as bytes); `Answer` is what
the gateway replies: a status, end-to-end headers and a body. `encode_head` turns an Answer
into the bytes of an HTTP/1.1 response head, from pre-encoded pieces: the servers
(`protocol_server`, or aiohttp through `aiohttp_adapter`) own the sockets, and the request
path knows neither. Pure, no I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["JSON", "Answer", "Request", "encode_head", "json_answer", "status_line"]

JSON = "application/json; charset=utf-8"
Headers = CIMultiDict[str] | CIMultiDictProxy[str]
_NO_COOKIES: Mapping[str, str] = {}
_NO_HEADERS: Headers = CIMultiDictProxy(CIMultiDict())
_LOWER_KEYS: dict[str, bytes] = {}  # header names the gateway looks up, lower-cased bytes


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _lower_key(name: str) -> bytes:
    key = _LOWER_KEYS.get(name)
    if key is None:
        key = name.lower().encode("utf-8", "surrogateescape")
        if len(_LOWER_KEYS) < 1024:  # names come from code and config: a small set
            _LOWER_KEYS[name] = key
    return key


class Request:
    """A request's head: method, path as sent (query included), headers (case-insensitive,
    repeated ones kept), HTTP version and whether the connection may be kept alive.

    A server that has the header bytes (`from_raw`) hands them over as received: `header`
    finds the few the gateway reads without decoding the rest, `raw_headers` lets them be
    forwarded as they came, and `headers` (a multidict of decoded strings) is made only
    when something asks for it."""

    __slots__ = (
        "_cookies",
        "_headers",
        "_index",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        headers: Headers,
        version: tuple[int, int] = (1, 1),
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self._headers: Headers | None = headers
        self.raw_headers: list[tuple[bytes, bytes]] | None = None
        self._index: dict[bytes, bytes] | None = None
        self.version = version
        self.keep_alive = keep_alive
        self._cookies: Mapping[str, str] | None = None

    @classmethod
    def from_raw(
        cls,
        method: str,
        raw_path: str,
        raw_headers: list[tuple[bytes, bytes]],
        version: tuple[int, int] = (1, 1),
        keep_alive: bool = True,
    ) -> Request:
        """With the (name, value) byte pairs as the parser gave them."""
        request = cls(method, raw_path, _NO_HEADERS, version, keep_alive)
        request._headers = None
        request.raw_headers = raw_headers
        return request

    @property
    def headers(self) -> Headers:
        """Every header, decoded as aiohttp's server decodes them (UTF-8, undecodable
        bytes kept as surrogates, so re-encoding them gives the bytes received)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(
                [(_decode(n), _decode(v)) for n, v in self.raw_headers or ()]
            )
        return headers

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), None when absent."""
        if self._headers is not None:
            return self._headers.get(name)
        index = self._index
        if index is None:  # lower-cased names, the first value of each
            assert self.raw_headers is not None
            index = self._index = {n.lower(): v for n, v in reversed(self.raw_headers)}
        value = index.get(_lower_key(name))
        return None if value is None else _decode(value)

    @property
    def path(self) -> str:
        """The path without its query string."""
        return self.raw_path.split("?", 1)[0]

    @property
    def content_length(self) -> int | None:
        """The declared body length; None when absent or not a number (chunked, or a
        server that has already refused it)."""
        value = self.header("Content-Length")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        return int(value)

    @property
    def expects_continue(self) -> bool:
        """The client waits for `100 Continue` before sending its body (HTTP/1.1 only)."""
        expect = self.header("Expect")
        return expect is not None and self.version >= (1, 1) and expect.lower() == "100-continue"

    @property
    def cookies(self) -> Mapping[str, str]:
        """Cookie name -> value, parsed on first use (only a sticky cookie needs them).

        A header that cannot be parsed whole gives no cookies rather than an error: the
        request is forwarded as it came, without a sticky key.
        """
        if self._cookies is None:
            values = self.headers.getall("Cookie", ())
            if not values:
                self._cookies = _NO_COOKIES
            else:
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load("; ".join(values))
                except CookieError:
                    self._cookies = _NO_COOKIES
                else:
                    self._cookies = {k: m.value for k, m in jar.items()}
        return self._cookies


@dataclass(slots=True)
class Answer:
    """A response: status, headers (without Content-Length, Date or Connection: the server
    sets those), body. `close`: the connection is closed once it is sent. `head`: header
    lines already encoded (each CRLF-terminated), sent before `headers`: an upstream's own
    headers passed on as they came, never decoded."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False
    head: bytes = b""


def json_answer(payload: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    body = json.dumps(payload).encode()
    return Answer(status, [("Content-Type", JSON), *headers], body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# the status lines of every status http.HTTPStatus knows, encoded once
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:  # an upstream's own status code, e.g. 599
        line = f"HTTP/1.1 {status} {_reason(status)}\r\n".encode()
    return line


class _DateHeader:
    """The `Date:` header line, formatted once per second (RFC 9110 6.6.1 wants it on every
    answer; formatting it per answer costs more than the rest of the head)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._line


_date = _DateHeader()
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"


def _encode_headers(headers: list[tuple[str, str]]) -> bytes:
    text = "".join([f"{k}: {v}\r\n" for k, v in headers])
    # as aiohttp's server does: the servers decode a request's header bytes as UTF-8 (with
    # surrogateescape), so a client's header echoed back (X-Request-ID) is the bytes it sent
    return text.encode("utf-8", "surrogateescape")


def encode_head(
    answer: Answer,
    *,
    keep_alive: bool,
    version: tuple[int, int] = (1, 1),
    now: float | None = None,
) -> bytes:
    """The response head for `answer`: status line, its headers, Content-Length, Date, and
    a Connection header where the default for `version` does not say it already."""
    parts = [status_line(answer.status), answer.head]
    if answer.headers:
        parts.append(_encode_headers(answer.headers))
    parts.append(b"Content-Length: %d\r\n" % len(answer.body))
    parts.append(_date.line(time.time() if now is None else now))
    if not keep_alive:
        parts.append(_CLOSE)
    elif version < (1, 1):
        parts.append(_KEEP_ALIVE)  # HTTP/1.0 closes unless told otherwise
    parts.append(b"\r\n")
    return b"".join(parts)
