"""The upstream client interface: how the gateway POSTs a request to a model server.

The client dominates a Python gateway's cost, so it sits behind this small interface and
can be swapped (`gateway.upstream_client`): aiohttp's ClientSession, or a thinner
keep-alive client on httptools.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HOP_BY_HOP",
    "RESPONSE_NOT_FORWARDED",
    "UpstreamClient",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamTooLarge",
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

# Of a response, besides those: Content-Length (the gateway's server sets it for the body
# it sends) and Content-Encoding (both clients hand over the decoded body).
RESPONSE_NOT_FORWARDED = CONNECTION_HEADERS | {"content-length", "content-encoding"}

Headers = Iterable[tuple[str, str]]


def end_to_end(headers: Headers, dropped: frozenset[str]) -> list[tuple[str, str]]:
    """`headers` without those in `dropped` (lower-case, including "connection") and those
    the Connection header names (RFC 9110 7.6.1: they are hop-by-hop too). One pass: this
    runs twice per request."""
    kept: list[tuple[str, str]] = []
    named: list[str] = []
    for k, v in headers:
        lower = k.lower()
        if lower in dropped:
            if lower == "connection":
                named.append(v)
        else:
            kept.append((k, v))
    if not named:
        return kept
    also = {t.strip().lower() for v in named for t in v.split(",")}
    return [(k, v) for k, v in kept if k.lower() not in also]


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]]  # every header of the response, as received

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), None when absent."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


class UpstreamError(Exception):
    """No usable response arrived; `error_class` is what the prediction log records."""

    error_class = "connection"


class UpstreamTimeout(UpstreamError):
    error_class = "timeout"


class UpstreamConnectionError(UpstreamError):
    error_class = "connection"


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

    @abstractmethod
    async def get(self, url: str, headers: Headers, timeout: float) -> UpstreamResponse:
        """GET the absolute `url` (health, readiness, metadata); errors as for `post`."""

    @abstractmethod
    async def close(self) -> None:
        """Close every pooled connection; idempotent."""
