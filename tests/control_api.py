"""Test helper: the real control API over an engine, served by uvicorn from a thread on a
loopback port (no controller loop), for the API contract and dashboard tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from sqlalchemy import Engine

from coalmine.api.app import create_app
from coalmine.rollout.controller import Controller
from coalmine.rollout.judge import EngineJudge


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot own signals
        pass


@contextmanager
def control_api(
    engine: Engine, token: str, controller: Controller | None = None, **app_options: Any
) -> Iterator[str]:
    """Yield the base URL of the control API over `engine`, authenticated by `token`.

    `controller`: the one whose commands the API applies (its listeners run on them);
    `app_options` go to `create_app` (e.g. `resources=`)."""
    controller = controller or Controller(engine, EngineJudge(engine))
    app = create_app(engine, token=token, controller=controller, **app_options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
