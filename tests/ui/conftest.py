"""The control API (with the dashboard installed by `create_app`) on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from tests.control_api import control_api as _control_api

TOKEN = "ui-test-token"


@contextmanager
def control_api(engine: Engine) -> Iterator[str]:
    """The real control API over `engine` (no controller loop), served from a thread."""
    with _control_api(engine, TOKEN) as url:
        yield url
