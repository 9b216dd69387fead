"""The gateway tests' real servers (fake upstreams on loopback, a real gateway) for these."""

from tests.gateway.conftest import start_gateway, upstreams

__all__ = ["start_gateway", "upstreams"]
