"""Running the gateway: uvloop, one process per core sharing the port, graceful stop.

`run_gateway` seeds the store's routes from the config once (in the parent), then serves in
this process or in `gateway.processes` child processes that all bind the same port with
SO_REUSEPORT, so the kernel spreads connections across them. On SIGTERM or SIGINT each
process stops accepting, lets in-flight requests finish, drains the mirror and flushes the
prediction log before exiting: a graceful stop loses no log rows.

`serve` is the in-process form for a caller that owns the event loop (`coalmine serve`
runs gateway, API and controller together).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import uvloop

from coalmine.config import CoalmineConfig
from coalmine.gateway import multiproc
from coalmine.gateway.aiohttp_adapter import start_aiohttp
from coalmine.gateway.app import Gateway
from coalmine.gateway.connections import (
    ConnectionLimits,
    connection_cap,
    fd_limit,
    raise_fd_limit,
)
from coalmine.gateway.protocol_server import start_protocol
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository

__all__ = ["Runner", "run_gateway", "seed_routes", "serve", "start_site"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 30.0  # how long in-flight requests may take to finish on a stop


def seed_routes(config: CoalmineConfig) -> None:
    """Store every configured version and the route of every model the store lacks."""
    engine = open_engine(config.store.url)
    try:
        RouteRepository(engine).seed_from_config(config)
    finally:
        engine.dispose()


class Runner(Protocol):
    """A started gateway server. `cleanup()` stops it gracefully: stop accepting, let
    in-flight requests finish, then drain the mirror and flush the prediction log."""

    gateway: Gateway

    async def cleanup(self) -> None: ...


def connection_limits(config: CoalmineConfig) -> ConnectionLimits:
    settings = config.gateway
    limits = ConnectionLimits(
        max_connections=connection_cap(settings.max_connections, fd_limit()),
        header_timeout_s=settings.header_timeout_s,
    )
    if limits.max_connections < settings.max_connections:
        log.info(
            "gateway connection cap %d (gateway.max_connections %d, bounded by the "
            "file-descriptor limit %s)",
            limits.max_connections,
            settings.max_connections,
            fd_limit(),
        )
    return limits


async def start_site(config: CoalmineConfig, *, port: int | None = None) -> tuple[Runner, int]:
    """Start the gateway listening (SO_REUSEPORT); returns its runner and bound port.

    `runner.cleanup()` stops it gracefully: stop accepting, let in-flight requests finish,
    then drain the mirror and flush the prediction log.
    """
    engine = open_engine(config.store.url)
    gateway = Gateway(config, engine)
    await gateway.start()
    # Everything loaded by now (modules, config, routes) lives as long as the process: out of
    # the collector's sight, a full collection no longer walks those ~100k objects (≈50 ms
    # each, a latency spike for every request in flight)
    gc.collect()
    gc.freeze()
    start = start_protocol if config.gateway.server == "protocol" else start_aiohttp
    return await start(
        gateway,
        engine,
        connection_limits(config),
        host=config.gateway.host,
        port=config.gateway.port if port is None else port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )


async def serve(
    config: CoalmineConfig,
    *,
    port: int | None = None,
    on_listening: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set, then shut down gracefully.

    Without a `stop` event, SIGTERM and SIGINT stop it; a caller that passes its own event
    (running the gateway beside other services) keeps the signals to itself.
    """
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    if own_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    runner, bound = await start_site(config, port=port)
    if on_listening is not None:
        on_listening(bound)
    try:
        await stop.wait()
    finally:
        # stops accepting, waits for in-flight requests, then flushes the mirror and the log
        await runner.cleanup()
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _announce(bound: int, host: str) -> None:
    # one write(2) of the whole line: every worker announces on the same stdout, and print()
    # writes the text and its newline apart, so two workers' lines could interleave
    sys.stdout.flush()
    line = f"coalmine gateway listening on http://{host}:{bound} (pid {os.getpid()})\n"
    os.write(sys.stdout.fileno(), line.encode())


def _child(config: CoalmineConfig, port: int, metrics_dir: Path | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def listening(bound: int) -> None:
        _announce(bound, config.gateway.host)

    if metrics_dir is None:
        uvloop.run(serve(config, port=port, on_listening=listening))
        return
    # one of several processes: its figures go to the shared files, merged at every scrape
    files = multiproc.enable(metrics_dir)
    try:
        uvloop.run(_serve_publishing(config, port, listening, files))
    finally:
        multiproc.disable()  # final figures written, its live gauges dropped


async def _serve_publishing(
    config: CoalmineConfig, port: int, listening: Callable[[int], None],
    files: multiproc.SharedFiles,
) -> None:  # fmt: skip
    async def publish() -> None:
        while True:
            await asyncio.sleep(multiproc.PUBLISH_S)
            files.publish()

    publisher = asyncio.create_task(publish())
    try:
        await serve(config, port=port, on_listening=listening)
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so port 0 resolves to one port every child can share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_gateway(config: CoalmineConfig) -> int:
    """Seed routes, serve until SIGTERM/SIGINT; returns an exit status."""
    raise_fd_limit()
    seed_routes(config)
    processes = config.gateway.processes or os.cpu_count() or 1
    if processes == 1:
        _child(config, config.gateway.port)
        return 0
    reserved = _reserve_port(config.gateway.host, config.gateway.port)
    port = reserved.getsockname()[1]
    metrics_dir, owned = multiproc.make_run_dir(config.gateway.metrics_dir)
    # fork, not spawn: the children inherit the imported modules (a spawned child re-imports
    # the whole CLI). Safe here: the parent has no threads and no open engine at this point.
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(
            target=_child, args=(config, port, metrics_dir), name=f"coalmine-gateway-{i}"
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
        if child.pid is not None:  # a worker killed before its own cleanup
            multiproc.mark_dead(child.pid, metrics_dir)
    reserved.close()
    multiproc.remove_run_dir(metrics_dir, owned)
    failed = [c.exitcode for c in children if c.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        print(f"gateway processes exited with {failed}", file=sys.stderr)
        return 1
    return 0
