"""Real processes for the fault suite: model servers (trained iris, served by
`coalmine serve-model`) and `coalmine serve` itself, each in its own process so a fault
(SIGSTOP, SIGKILL, a lowered descriptor limit) hits only the process it is meant for.

Every test here is bounded in time: waits have deadlines, and fixtures resume (SIGCONT)
and stop whatever they started.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.modelserver import ModelServerHandle, start_model_server

# the gateway in the test's own loop (real sockets), for faults of the processes behind it
from tests.gateway.conftest import start_gateway  # noqa: F401
from tests.gateway.default_server import server  # noqa: F401

TOKEN = "fault-suite-token"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults-model") / "iris.joblib"
    iris = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), path)
    return path


ModelServers = Callable[..., ModelServerHandle]


@pytest.fixture(scope="session")
def stable_server(
    iris_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServerHandle]:
    """One healthy "v1" server, shared by the fault suite: never the one faulted."""
    log_dir = tmp_path_factory.mktemp("stable-log")
    with start_model_server(iris_model, name="m", version="v1", log_dir=log_dir) as handle:
        yield handle


@pytest.fixture
def model_servers(iris_model: Path, tmp_path: Path) -> Iterator[ModelServers]:
    """Start iris model servers (kwargs as `start_model_server`); all stopped at the end,
    resumed first if a test left one SIGSTOPped."""
    started: list[ModelServerHandle] = []

    def start(version: str, **kwargs: Any) -> ModelServerHandle:
        handle = start_model_server(
            iris_model, name="m", version=version, log_dir=tmp_path, **kwargs
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.process.poll() is None:
            os.kill(handle.pid, signal.SIGCONT)
        handle.stop()


class Serve:
    """`coalmine serve` in a child process; `nofile` lowers its descriptor limit (soft and
    hard, so the command cannot raise it back)."""

    def __init__(
        self, tmp: Path, config: dict[str, Any], *flags: str, nofile: int | None = None
    ) -> None:
        self.config_path = tmp / "coalmine.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "serve.log"
        self.gateway_url = ""
        self.api_url = ""

        def limit() -> None:  # runs in the child, before exec
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coalmine.cli", "serve", "--config",
                 str(self.config_path), *flags],
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=limit,
            )  # fmt: skip
        want = {"gateway", "api", "controller"}
        for flag in flags:
            want.discard(flag.removeprefix("--no-"))
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while want:
            line = self.process.stdout.readline().decode()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"coalmine serve did not start: {self.log()[-3000:]}")
            if m := re.match(r"coalmine serve: (gateway|api) (http://\S+)", line):
                want.discard(m.group(1))
                setattr(self, f"{m.group(1)}_url", m.group(2))
            elif "controller running" in line:
                want.discard("controller")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def serve_config(tmp: Path, urls: dict[str, str], **sections: Any) -> dict[str, Any]:
    """A `coalmine serve` config for model "m" (stable v1) on free ports, a SQLite store."""
    routing = {"stable": "v1", **sections.pop("routing", {})}
    gateway = {"port": 0, "routing_poll_s": 0.1, **sections.pop("gateway", {})}
    return {
        "gateway": gateway,
        "api": {"port": 0, "token": TOKEN},
        "store": {"url": f"sqlite:///{tmp / 'coalmine.db'}"},
        "logging": {"flush_interval_s": 0.05, **sections.pop("logging", {})},
        "models": [
            {
                "name": "m",
                "versions": [{"name": v, "url": u} for v, u in urls.items()],
                "routing": routing,
            }
        ],
        **sections,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(config: dict[str, Any], *flags: str, nofile: int | None = None) -> Serve:
        handle = Serve(tmp_path, config, *flags, nofile=nofile)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def bad_model() -> Iterator[Callable[[str], str]]:
    """Start `bad_model.py MODE` processes; returns the URL of each; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> str:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "bad_model.py"), mode],
            stdout=subprocess.PIPE,
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("listening on "), line
        return line.split()[-1]

    yield start
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


class OwnPostgres:
    """A PostgreSQL server of one test's own (so restarting it disturbs no other test),
    on a Unix socket in a private directory; `url` is a migrated Coalmine database."""

    def __init__(self, root: Path) -> None:
        from tests.conftest import PG_BIN, _as_postgres_user, _create_database, _database

        self._bin, self._as_postgres = PG_BIN, _as_postgres_user
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"PostgreSQL binaries not found under {PG_BIN}")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        self.data, self.log = root / "data", root / "server.log"
        self._options = f"-k {root} -c listen_addresses='' -F"
        self._ctl("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._pg_ctl("start")
        admin = f"postgresql+psycopg://postgres@/postgres?host={root}"
        _create_database(admin, "coalmine")
        self.url = _database(admin, "coalmine")

    def _ctl(self, tool: str, *args: str) -> None:
        subprocess.run(
            self._as_postgres([str(self._bin / tool), *args]),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._ctl(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options, "-w",
            *args, action,
        )  # fmt: skip

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "immediate")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    # under /tmp itself: pytest's own temporary directories are closed to the postgres user
    root = Path(tempfile.mkdtemp(prefix="coalmine-own-pg-"))
    try:
        server = OwnPostgres(root)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
