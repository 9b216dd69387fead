"""The upstream client on aiohttp's ClientSession: one session, pooled keep-alive."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from coalmine.gateway.upstream.base import (
    Headers,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
    UpstreamUnreachableTimeout,
)

__all__ = ["AiohttpClient"]

_CONNECT_TIMEOUT_S = 5.0  # as HttptoolsClient's


async def _read_bounded(response: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    """The decoded body, or UpstreamTooLarge as soon as it passes `limit` bytes."""
    if (response.content_length or 0) > limit and not response.headers.get("Content-Encoding"):
        raise UpstreamTooLarge(f"{url}: answer of {response.content_length} bytes, over {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            response.close()  # the rest is not read: the connection is dropped
            raise UpstreamTooLarge(f"{url}: answer over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class AiohttpClient(UpstreamClient):
    def __init__(self, *, limit: int = 1024, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limit
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running loop (the gateway's, not an import-time one).
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=30,
                ttl_dns_cache=300,
                ssl=self._ssl,  # True: verify https:// upstreams against the system's CAs
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # a proxy must not carry cookies across users
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # the connect's own bound (a bit under the call's, so that a host that does not
            # answer connects shows as one, UpstreamUnreachableTimeout, not as a slow call)
            connect = min(seconds * 0.9, _CONNECT_TIMEOUT_S)
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=seconds, sock_connect=connect
            )
        return timeout

    async def post(
        self, url: str, body: bytes, headers: Headers, timeout: float
    ) -> UpstreamResponse:
        return await self._request("POST", url, body, headers, timeout)

    async def get(self, url: str, headers: Headers, timeout: float) -> UpstreamResponse:
        return await self._request("GET", url, None, headers, timeout)

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: Headers, timeout: float
    ) -> UpstreamResponse:
        session = self._get_session()
        try:
            async with session.request(
                method, url, data=body, headers=list(headers), timeout=self._timeout(timeout)
            ) as response:
                data = await _read_bounded(response, self.max_response_bytes, url)
                return UpstreamResponse(response.status, data, list(response.headers.items()))
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnreachableTimeout(f"connect to {url} timed out") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no response from {url} within {timeout}s") from exc
        except aiohttp.ClientSSLError as exc:  # the host answered; its certificate is wrong
            raise UpstreamConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:  # refused, no route, name not resolved
            raise UpstreamUnreachable(f"{url}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # let the connector's transports finish closing before the loop goes away
            await asyncio.sleep(0)
