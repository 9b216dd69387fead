"""`LocalCoalmine`: a real `coalmine serve` (gateway, control API, controller) for a test."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from coalmine.testing._spec import _merge

if TYPE_CHECKING:
    from coalmine.client import Client

__all__ = ["LocalCoalmine"]

_ANNOUNCEMENT = re.compile(r"coalmine serve: (gateway|api) (https?://\S+)")


class _HasUrl(Protocol):
    @property
    def url(self) -> str: ...


def _url(where: str | _HasUrl) -> str:
    return where if isinstance(where, str) else where.url


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class LocalCoalmine:
    """`coalmine serve` in its own process, on loopback ports picked by the OS and a fresh
    SQLite store, with a generated API token. Use it as a context manager:

        with LocalCoalmine({"iris": {"v1": "http://127.0.0.1:9001"}}) as cm:
            ...  # send requests to cm.gateway_url, steer rollouts with cm.client()

    `models` maps each model name to its versions (name -> base URL, or anything with a
    `.url`, such as a ModelServerHandle); the first version is the stable one. `tasks` names
    the regression models (default classification). `config` is merged into the generated
    configuration (e.g. `{"gateway": {"fast_guard_failures": 0}}`). Files (config, store,
    logs) go to `workdir`, or to a temporary directory removed on exit.

    On exit the process gets SIGTERM, as in production: the gateway drains and flushes its
    prediction log to the store, so `db_path` holds every answered request afterwards.
    """

    def __init__(
        self,
        models: Mapping[str, Mapping[str, str | _HasUrl]],
        *,
        tasks: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        workdir: str | Path | None = None,
        token: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        if not models or any(not versions for versions in models.values()):
            raise ValueError("models: give at least one model with at least one version")
        self.models = {m: {v: _url(u) for v, u in vs.items()} for m, vs in models.items()}
        self.tasks = dict(tasks or {})
        self.token = token or secrets.token_urlsafe(24)
        self.startup_timeout = startup_timeout
        self._overrides = dict(config or {})
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="coalmine-"))
        )
        self.gateway_url = ""
        self.api_url = ""
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._output: list[str] = []
        self._clients: list[Client] = []

    # -- files ------------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        """The SQLite store: prediction log, feedback, routes, rollouts and their events."""
        return self.workdir / "coalmine.db"

    @property
    def config_path(self) -> Path:
        return self.workdir / "coalmine.yaml"

    @property
    def log_path(self) -> Path:
        """What `coalmine serve` wrote to stderr (its log lines, any traceback)."""
        return self.workdir / "coalmine-serve.log"

    def config(self) -> dict[str, Any]:
        """The configuration `coalmine serve` runs with."""
        generated: dict[str, Any] = {
            "gateway": {"host": "127.0.0.1", "port": 0, "routing_poll_s": 0.25},
            "api": {"host": "127.0.0.1", "port": 0, "token": self.token},
            "store": {"url": f"sqlite:///{self.db_path}"},
            # small, frequent batches: a test reads the log a moment after the traffic
            "logging": {"flush_interval_s": 0.1, "batch_size": 100},
            "models": [
                {
                    "name": name,
                    "task": self.tasks.get(name, "classification"),
                    "versions": [{"name": v, "url": u} for v, u in versions.items()],
                    "routing": {"stable": next(iter(versions))},
                }
                for name, versions in self.models.items()
            ],
        }
        return _merge(generated, self._overrides)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> LocalCoalmine:
        """Start `coalmine serve` and return once gateway, API and controller are up."""
        if self._process is not None:
            raise RuntimeError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with open(self.log_path, "ab") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(self.config_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        # never left running, even by a test that forgets to stop it
        weakref.finalize(self, _kill, self._process)
        # a thread keeps reading stdout for the process's whole life, so it never blocks
        self._reader = threading.Thread(
            target=self._read, name="coalmine-serve-stdout", daemon=True
        )
        self._reader.start()
        if not self._ready.wait(self.startup_timeout) or not (self.gateway_url and self.api_url):
            exit_code = self._process.poll()
            logs = self.logs()[-3000:]
            self.stop()
            raise RuntimeError(f"coalmine serve did not start (exit code {exit_code}):\n{logs}")
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        want = {"gateway", "api", "controller"}
        for raw in self._process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._output.append(line)
            if m := _ANNOUNCEMENT.match(line):
                setattr(self, f"{m.group(1)}_url", m.group(2))
                want.discard(m.group(1))
            elif line.startswith("coalmine serve: controller running"):
                want.discard("controller")
            if not want:
                self._ready.set()
        self._ready.set()  # EOF: the process ended; start() reports it

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop that flushes the log), SIGKILL after `timeout` seconds.
        Returns the exit code: 0 after a clean stop. Safe to call twice."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.returncode = process.returncode
            if self._reader is not None:
                self._reader.join(10)
            if process.stdout is not None:
                process.stdout.close()
            self._process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.returncode

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> LocalCoalmine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- using it ---------------------------------------------------------------------------

    def client(self) -> Client:
        """A `coalmine.Client` for the control API, closed when this instance stops."""
        from coalmine.client import Client

        client = Client(self.api_url, self.token)
        self._clients.append(client)
        return client

    def predict_url(self, model: str) -> str:
        """The gateway's KServe V1 endpoint for `model`."""
        return f"{self.gateway_url}/v1/models/{model}:predict"

    def logs(self) -> str:
        """Its stdout announcements and its stderr log, for a failing test's message."""
        try:
            stderr = self.log_path.read_text(errors="replace")
        except OSError:
            stderr = ""
        return "\n".join(self._output) + "\n" + stderr

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped ({self.returncode})"
        return f"<LocalCoalmine {state} gateway={self.gateway_url} api={self.api_url}>"
