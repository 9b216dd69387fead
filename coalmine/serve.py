"""`coalmine serve --config FILE`: gateway, control API and rollout controller in ONE process.

For the single-machine case. All three share one uvloop event loop:

- the gateway (`coalmine.gateway.server.start_site`, on `gateway.server`) on `gateway.port`; with
  `gateway.processes` other than 1, a child `coalmine gateway` with that many workers
  sharing the port instead (0 = one per core);
- the FastAPI control API under uvicorn on `api.port` (its own port: the data plane
  exposes no control operation);
- the controller loop (`Controller.run`), whose database work runs in threads.

Each part can be switched off (`--no-gateway`, `--no-api`, `--no-controller`), so the same
command runs a controller alone (e.g. one per store, restarted independently of the
gateway) or a gateway with a multi-process gateway elsewhere. SIGTERM/SIGINT stop all parts
gracefully: the gateway drains and flushes its log, the controller finishes its tick and
due webhooks get a few seconds; undelivered ones stay in the store's outbox for the next
start (webhooks are durable: a SIGKILL loses none).

The API refuses to start without a token (`api.token` or $COALMINE_TOKEN);
`--generate-token` makes a random one and prints it, for a laptop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # uvicorn and the config models load when the command runs
    import uvicorn

    from coalmine.config import CoalmineConfig
    from coalmine.registry import RegistryListener
    from coalmine.rollout.controller import Controller

__all__ = ["run_serve", "serve_command"]

log = logging.getLogger(__name__)


def _uvicorn_server(config: uvicorn.Config) -> uvicorn.Server:
    import uvicorn

    class _Uvicorn(uvicorn.Server):
        """uvicorn without its own signal handling: `coalmine serve` owns the signals."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return _Uvicorn(config)


def _announce(what: str, host: str, port: int, scheme: str = "http") -> None:
    print(f"coalmine serve: {what} {scheme}://{host}:{port}", flush=True)


async def run_serve(
    config: CoalmineConfig,
    *,
    token: str | None,
    gateway: bool = True,
    api: bool = True,
    controller: bool = True,
    tick_s: float = 0.25,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    config_path: Path | None = None,
) -> None:
    import uvicorn

    from coalmine.api.app import create_app
    from coalmine.providers.sync import TrafficSync
    from coalmine.rollout.controller import Controller
    from coalmine.rollout.judge import EngineJudge
    from coalmine.rollout.leader import Leader
    from coalmine.rollout.lease import settings_for
    from coalmine.rollout.webhooks import WebhookSender
    from coalmine.store.engine import open_engine
    from coalmine.store.retention import RetentionLoop
    from coalmine.store.routes import RouteRepository

    _install_user_metrics(config)
    metric_sources = _install_metric_sources(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    tasks: dict[str, str] = {m.name: m.task for m in config.models}
    from coalmine.analysis.sources.resources import resource_sources

    sources = resource_sources(config.models)
    with_sources = {model for model, _ in sources}
    judge = EngineJudge(engine, tasks, resources=sources, metric_sources=metric_sources)
    # the leader lease: one controller or several on this store, only the holder acts
    lease = settings_for(config.controller.lease_ttl_s, config.controller.lease_renew_s)
    ctl = Controller(
        engine,
        judge,
        sender=WebhookSender(engine),
        tick_s=tick_s,
        traffic=TrafficSync.from_config(config, engine),
        leader=Leader(engine, settings=lease),
    )
    registry_listener = await _attach_registry(ctl)
    running: list[asyncio.Task[None]] = []
    runner = None
    retention: RetentionLoop | None = None
    gateway_group: asyncio.subprocess.Process | None = None
    server: uvicorn.Server | None = None
    try:
        if gateway and config.gateway.processes != 1:
            # several gateway processes share the port (SO_REUSEPORT) in a child
            # `coalmine gateway`, which forks them; forking this threaded process would not
            # be safe. Its log writers flush on the SIGTERM we forward at the end.
            if config_path is None:
                raise ValueError("gateway.processes != 1 needs the config file's path")
            gateway_group, gw_port = await _start_gateway_processes(config_path)
            _announce("gateway", config.gateway.host, gw_port)
        elif gateway:
            from coalmine.gateway.server import start_site

            runner, gw_port = await start_site(config)
            _announce("gateway", config.gateway.host, gw_port)
        if api:
            assert token is not None
            app = create_app(
                engine,
                token=token,
                controller=ctl,
                tasks=tasks,
                resources=with_sources.__contains__,
                max_body_bytes=config.api.max_body_bytes,
                config=config,
                judge_token=config.api.resolved_judge_token(),
            )
            sock = socket.socket(socket.AF_INET6 if ":" in config.api.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.api.host, config.api.port))
            server = _uvicorn_server(
                uvicorn.Config(
                    app,
                    log_level="warning",
                    lifespan="off",
                    access_log=False,
                    # h11 bounds a request head (16 KiB past one read); uvicorn's httptools
                    # protocol took a 20 MB header whole
                    http="h11",
                    h11_max_incomplete_event_size=16 * 1024,
                    ssl_certfile=config.api.tls_cert_file,
                    ssl_keyfile=config.api.tls_key_file,
                )
            )
            running.append(asyncio.create_task(server.serve(sockets=[sock])))
            while not server.started and not running[-1].done():
                await asyncio.sleep(0.01)
            scheme = "https" if config.api.tls_cert_file else "http"
            _announce("api", config.api.host, sock.getsockname()[1], scheme)
        if controller:
            running.append(asyncio.create_task(ctl.run()))
            if config.store.retention_days is not None:
                retention = RetentionLoop(engine, config.store.retention_days)
                running.append(asyncio.create_task(retention.run()))
            print("coalmine serve: controller running", flush=True)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *running], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        waiter.cancel()
    finally:
        ctl.stop()
        if retention is not None:
            retention.stop()
        if server is not None:
            server.should_exit = True
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        if gateway_group is not None:
            await _stop_gateway_processes(gateway_group)
        if registry_listener is not None:
            await asyncio.to_thread(registry_listener.close)
        await asyncio.to_thread(engine.dispose)
        for sig in signals:
            loop.remove_signal_handler(sig)


_GATEWAY_LISTENING = "coalmine gateway listening on http://"


async def _start_gateway_processes(config_path: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`coalmine gateway --config FILE` as a child (it forks `gateway.processes` workers);
    returns it and the port its workers announced."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coalmine.cli", "gateway", "--config", str(config_path),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        async with asyncio.timeout(60):
            while line := (await child.stdout.readline()).decode():
                if line.startswith(_GATEWAY_LISTENING):
                    port = int(line[len(_GATEWAY_LISTENING) :].split()[0].rsplit(":", 1)[1])
                    break
            else:
                raise RuntimeError(f"coalmine gateway exited with {await child.wait()}")
    except BaseException:
        if child.returncode is None:
            child.kill()
        raise
    # keep reading its announcements so it never blocks on a full pipe
    asyncio.get_running_loop().create_task(child.stdout.read())
    return child, port


async def _stop_gateway_processes(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.terminate()  # forwarded to every worker: they drain and flush their logs
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()


def _install_user_metrics(config: CoalmineConfig) -> None:
    """The config file's `user_metrics:` become the only ones criteria may name (imported
    now, so a typo stops the start instead of failing the first evaluation)."""
    from coalmine.analysis.user_metrics import UserMetricError, install_user_metrics
    from coalmine.config import ConfigError

    try:
        install_user_metrics(config.user_metrics)
    except UserMetricError as exc:
        raise ConfigError("user_metrics", [("user_metrics", str(exc))]) from None


def _install_metric_sources(config: CoalmineConfig) -> dict[str, Any]:
    """The config file's `metric_sources:` become the only ones criteria may name (their
    queries checked now); returns name -> query client."""
    from coalmine.analysis.promql import TemplateError, install_sources
    from coalmine.analysis.sources.promql import PrometheusQuery
    from coalmine.config import ConfigError

    try:
        install_sources({name: src.queries for name, src in config.metric_sources.items()})
    except TemplateError as exc:
        raise ConfigError("metric_sources", [("metric_sources", str(exc))]) from None
    return {
        name: PrometheusQuery(str(src.url), timeout_s=src.timeout_s)
        for name, src in config.metric_sources.items()
    }


async def _attach_registry(ctl: Controller) -> RegistryListener | None:
    """With $COALMINE_REGISTRY set (e.g. mlflow), write rollout outcomes to the registry,
    first replaying endings it missed while no controller ran."""
    from coalmine.registry import RegistryListener, registry_from_env

    registry = registry_from_env()
    if registry is None:
        return None
    listener = RegistryListener(registry)
    await asyncio.to_thread(listener.catch_up, [r.to_dict() for r in ctl.repo.recent()])
    ctl.listeners.append(listener.on_transition)
    return listener


def serve_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML configuration file"),
    gateway: bool = typer.Option(True, "--gateway/--no-gateway", help="run the data plane"),
    api: bool = typer.Option(True, "--api/--no-api", help="run the control API"),
    controller: bool = typer.Option(
        True, "--controller/--no-controller", help="run the rollout controller"
    ),
    generate_token: bool = typer.Option(
        False, "--generate-token", help="no token configured? make a random one and print it"
    ),
) -> None:
    """Run gateway, control API and rollout controller together (single machine)."""
    from coalmine.config import ConfigError, load_config

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(2) from None
    token = loaded.api.resolved_token()
    if api and not token:
        if not generate_token:
            print(
                "refusing to start the control API without a token: set api.token in the "
                "config or $COALMINE_TOKEN (or pass --generate-token for a local run)",
                file=sys.stderr,
            )
            raise typer.Exit(2)
        from coalmine.api.auth import generate_token as make

        token = make()
        print(f"coalmine serve: generated API token {token}", flush=True)
    import uvloop  # the gateway's loop; imported here to keep `coalmine --help` quick

    from coalmine.gateway.connections import raise_fd_limit

    raise_fd_limit()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        uvloop.run(
            run_serve(
                loaded, token=token, gateway=gateway, api=api, controller=controller,
                config_path=config,
            )
        )  # fmt: skip
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(2) from None
