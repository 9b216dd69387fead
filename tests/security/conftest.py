"""The gateway tests' real servers (fake upstreams on loopback, a real gateway) for these."""

from tests.gateway.conftest import start_gateway, upstreams
from tests.gateway.default_server import server

__all__ = ["server", "start_gateway", "upstreams"]
