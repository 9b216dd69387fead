"""Upstream HTTP clients: an interface, one implementation a file, a registry."""

from coalmine.gateway.upstream.base import (
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from coalmine.gateway.upstream.registry import make_client

__all__ = [
    "UpstreamClient",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "make_client",
]
