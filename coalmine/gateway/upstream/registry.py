"""Upstream clients by their config name (`gateway.upstream_client`)."""

from __future__ import annotations

from collections.abc import Callable

from coalmine.gateway.upstream.aiohttp_client import AiohttpClient
from coalmine.gateway.upstream.base import UpstreamClient
from coalmine.gateway.upstream.httptools_client import HttptoolsClient

__all__ = ["CLIENTS", "make_client", "register_client"]

CLIENTS: dict[str, Callable[[], UpstreamClient]] = {
    "aiohttp": AiohttpClient,
    "httptools": HttptoolsClient,
}


def register_client(name: str, factory: Callable[[], UpstreamClient]) -> None:
    if name in CLIENTS:
        raise ValueError(f"upstream client {name!r} is already registered")
    CLIENTS[name] = factory


def make_client(name: str, *, max_response_bytes: int | None = None) -> UpstreamClient:
    try:
        factory = CLIENTS[name]
    except KeyError:
        raise ValueError(
            f"unknown upstream client {name!r}; known: {', '.join(sorted(CLIENTS))}"
        ) from None
    client = factory()
    if max_response_bytes is not None:
        client.max_response_bytes = max_response_bytes
    return client
