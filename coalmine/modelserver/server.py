"""Run the model server until SIGTERM/SIGINT; announce the bound address on stdout.

The first stdout line is JSON, `{"event": "listening", "url": ..., "pid": ...}`, so a parent
that asked for port 0 learns the real port without racing for a free one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from coalmine.modelserver.app import Faults, build_app
from coalmine.modelserver.model import load_model

__all__ = ["run_model_server"]


async def _serve(app: web.Application, host: str, port: int) -> None:
    # Handlers first: a SIGTERM right after "listening" must still be a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host}:{bound_port}"
    sys.stdout.write(json.dumps({"event": "listening", "url": url, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_model_server(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    version: str = "1",
    faults: Faults | None = None,
) -> None:
    """Load the model (before binding, so "listening" means ready) and serve it."""
    model = load_model(path, name=name or Path(path).stem, version=version)
    uvloop.run(_serve(build_app(model, faults), host, port))
