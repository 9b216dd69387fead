"""Several Coalmine processes on one PostgreSQL, as on separate machines, for tests.

Reusable pieces (the HA tests build on them):

- `write_config(path, store_url, models, **overrides)`: a config file for every process;
- `GatewayReplica.start(config)`: one `coalmine gateway` process on its own free port;
- `ControlPlane.start(config, controller=..., api=...)`: `coalmine serve --no-gateway`
  (controller and/or control API) on its own ports;
- `LoadBalancer.start(tmp, ports)`: a real nginx spreading requests round-robin over the
  gateway replicas, as a cloud load balancer would;
- `Cluster`: N replicas + one control plane + the load balancer, stopped together.

Every process gets SIGTERM on stop (a graceful stop that flushes the log) and SIGKILL if it
does not exit in time; `kill()` is SIGKILL at once, for crash tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.providers.nginx_harness import NGINX, free_port

TOKEN = "replicas-token"

_GATEWAY = re.compile(r"coalmine gateway listening on (http://\S+)")
_SERVE = re.compile(r"coalmine serve: (api|controller) ?(https?://\S+)?")


def write_config(
    path: Path,
    store_url: str,
    models: Mapping[str, Mapping[str, str]],
    *,
    tasks: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Path:
    """A config for every process of the cluster: `models` maps model -> version -> URL (the
    first version is stable); `overrides` replace whole top-level sections."""
    config: dict[str, Any] = {
        "gateway": {"host": "127.0.0.1", "port": 0, "routing_poll_s": 1.0,
                    "fast_guard_failures": 3},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "store": {"url": store_url},
        "logging": {"flush_interval_s": 0.1, "batch_size": 100},
        "models": [
            {
                "name": name,
                "task": (tasks or {}).get(name, "classification"),
                "versions": [{"name": v, "url": u} for v, u in versions.items()],
                "routing": {"stable": next(iter(versions))},
            }
            for name, versions in models.items()
        ],
    }  # fmt: skip
    config.update(overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class _Process:
    """A child process whose stdout announcements are read by a thread for its whole life."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self.lines: list[str] = []
        self._changed = threading.Condition()
        with open(log_path, "ab") as stderr:
            self.process = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, pattern: re.Pattern[str], count: int = 1, timeout: float = 60
    ) -> list[re.Match[str]]:
        """The first `count` lines matching `pattern`, waiting for them to be printed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for line in self.lines if (m := pattern.search(line))]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.process.args} did not announce {pattern.pattern!r} "
                        f"(exit {self.process.poll()}):\n{self.logs()[-3000:]}"
                    )
                self._changed.wait(min(left, 0.2))

    def logs(self) -> str:
        try:
            stderr = self.log_path.read_text(errors="replace")
        except OSError:
            stderr = ""
        return "\n".join(self.lines) + "\n" + stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful: in-flight requests finish, the log is flushed), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)


def _coalmine(*args: str) -> list[str]:
    return [sys.executable, "-m", "coalmine.cli", *args]


class GatewayReplica(_Process):
    """`coalmine gateway --config FILE` on a free port (one process: one "machine")."""

    url: str

    @classmethod
    def start(cls, config: Path, *, name: str = "gateway", timeout: float = 60) -> GatewayReplica:
        replica = cls(
            _coalmine("gateway", "--config", str(config), "--port", "0", "--processes", "1"),
            config.parent / f"{name}.log",
        )
        try:
            [m] = replica.wait_for(_GATEWAY, timeout=timeout)
            replica.url = m.group(1)
            replica.wait_ready(timeout)
        except BaseException:
            replica.kill()
            raise
        return replica

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway {self.url} not ready:\n{self.logs()[-3000:]}")

    def predict_url(self, model: str) -> str:
        return f"{self.url}/v1/models/{model}:predict"


class ControlPlane(_Process):
    """`coalmine serve --no-gateway`: the controller and/or the control API on one store."""

    api_url: str | None = None

    @classmethod
    def start(
        cls,
        config: Path,
        *,
        controller: bool = True,
        api: bool = True,
        name: str = "control",
        timeout: float = 60,
    ) -> ControlPlane:
        args = ["serve", "--config", str(config), "--no-gateway"]
        args += [] if controller else ["--no-controller"]
        args += [] if api else ["--no-api"]
        plane = cls(_coalmine(*args), config.parent / f"{name}.log")
        try:
            found = plane.wait_for(_SERVE, count=int(controller) + int(api), timeout=timeout)
            for m in found:
                if m.group(1) == "api":
                    plane.api_url = m.group(2)
        except BaseException:
            plane.kill()
            raise
        return plane

    def client(self) -> Any:
        from coalmine.client import Client

        assert self.api_url is not None, "started with api=False"
        return Client(self.api_url, TOKEN)


def _nginx_config(prefix: Path, port: int, upstream_ports: Sequence[int]) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} notice;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n{temp}\n"
        f"  upstream coalmine_gateways {{\n{servers}\n    keepalive 32;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        f"    location / {{\n      proxy_pass http://coalmine_gateways;\n"
        f'      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
        f"      proxy_set_header Host $host;\n      proxy_pass_request_headers on;\n"
        f"      add_header X-Upstream $upstream_addr always;\n    }}\n  }}\n}}\n"
    )


class LoadBalancer:
    """A real nginx balancing round-robin over the gateway replicas (each request to the
    next replica: the worst case for stickiness, which must come from the hashing alone).
    Each answer carries `X-Upstream`: the replica that served it."""

    def __init__(self, prefix: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.prefix = prefix
        self.port = port
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, tmp: Path, upstream_ports: Sequence[int]) -> LoadBalancer:
        if not NGINX.exists():
            raise FileNotFoundError(NGINX)
        prefix = tmp / "lb"
        (prefix / "tmp").mkdir(parents=True)
        port = free_port()
        main = prefix / "nginx.conf"
        main.write_text(_nginx_config(prefix, port, upstream_ports))
        process = subprocess.Popen(
            [str(NGINX), "-p", str(prefix), "-c", str(main)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lb = cls(prefix, port, process)
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {lb.error_log()}")
            try:
                httpx.get(f"{lb.url}/healthz", timeout=1)
                return lb
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                lb.stop()
                raise RuntimeError(f"nginx did not start: {lb.error_log()}")
            time.sleep(0.05)

    def predict_url(self, model: str) -> str:
        return f"{self.url}/v1/models/{model}:predict"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Cluster:
    """`replicas` gateway processes, one control plane and nginx in front, on one store."""

    def __init__(self, config: Path, *, replicas: int = 3, control: bool = True) -> None:
        self.config = config
        self.n = replicas
        self.control_wanted = control
        self.gateways: list[GatewayReplica] = []
        self.control: ControlPlane | None = None
        self.lb: LoadBalancer | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Cluster:
        try:
            for i in range(self.n):
                replica = GatewayReplica.start(self.config, name=f"gateway-{i + 1}")
                self._stack.callback(replica.stop)
                self.gateways.append(replica)
            if self.control_wanted:
                self.control = ControlPlane.start(self.config)
                self._stack.callback(self.control.stop)
            self.lb = LoadBalancer.start(self.config.parent, [g.port for g in self.gateways])
            self._stack.callback(self.lb.stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def logs(self) -> str:
        parts = [f"--- {g.url}\n{g.logs()[-2000:]}" for g in self.gateways]
        if self.control is not None:
            parts.append(f"--- control\n{self.control.logs()[-2000:]}")
        return "\n".join(parts)
