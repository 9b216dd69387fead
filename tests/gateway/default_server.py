"""The `server` fixture for suites outside tests/gateway that import `start_gateway`: their
gateways run once, on the configured (default) `gateway.server`; tests/gateway runs every
test on each server (its conftest's parametrized `server`)."""

from __future__ import annotations

import pytest


@pytest.fixture
def server() -> None:
    return None
