"""The demo's processes: one `serve-model` per version and one `coalmine serve`.

Everything listens on loopback, on ports the kernel picks (port 0), and announces them on
stdout; nothing here decides anything about a rollout.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from coalmine.modelserver import ModelServerHandle, start_model_server_async

__all__ = ["ServeProcess", "demo_config", "start_model_servers", "start_serve"]

MODEL = "digits"
_ANNOUNCE = re.compile(r"coalmine serve: (gateway|api) (http://\S+)")


def demo_config(
    work: Path, urls: Mapping[str, str], token: str, pid_files: Mapping[str, Path]
) -> dict[str, object]:
    """The embedded defaults: SQLite in the work dir, loopback, ports chosen by the kernel.

    Every version has its server's PID file as its resource source (server configuration,
    never a spec), so `cpu` and `memory` are measured in every rollout. Read from /proc, not
    from the server's `/metrics`: on a loaded machine a busy server answers a scrape only
    after its queue of requests, and a scrape past its timeout loses a window (the demo saw
    dozens at a load of 18 on 2 cores, and production's windows lagged the candidate's).
    v1, the first, is the stable version."""
    versions = [{"name": v, "url": url, "pid_file": str(pid_files[v])}
                for v, url in urls.items()]  # fmt: skip
    return {
        # Every part shares one machine: when it is busy, answers take seconds for every
        # version alike (measured: 2 s at a load of 19 on 2 cores), and the canary's 2 s
        # default timeout tripped the fast guard on a good v2 at its 100% step. The canary
        # gets production's timeout; its latency is still judged (latency_p95).
        "gateway": {
            "host": "127.0.0.1",
            "port": 0,
            "routing_poll_s": 0.2,
            "canary_timeout_s": 10.0,
        },
        "logging": {"flush_interval_s": 0.2, "inputs": "full"},
        "store": {"url": f"sqlite:///{work / 'coalmine.db'}"},
        "api": {"host": "127.0.0.1", "port": 0, "token": token},
        "models": [
            {
                "name": MODEL,
                "task": "classification",
                "versions": versions,
                "routing": {"stable": next(iter(urls)), "sticky": {"header": "X-User-Id"}},
                "slices": [{"name": "region", "header": "X-Region"}],
            }
        ],
    }


async def start_model_servers(
    paths: Mapping[str, Path],
    log_dir: Path,
    faults: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, ModelServerHandle]:
    """Start every version's server at once (each loads scikit-learn: ~1 s of CPU);
    `faults[version]` are serve-model fault flags (`leak_kb`, `burn_cpu_ms`, ...)."""
    versions = list(paths)
    faults = faults or {}
    started = await asyncio.gather(
        *(
            start_model_server_async(
                paths[v], name=MODEL, version=v, log_dir=log_dir, **faults.get(v, {})
            )
            for v in versions
        ),
        return_exceptions=True,
    )
    handles = {
        v: h for v, h in zip(versions, started, strict=True) if not isinstance(h, BaseException)
    }
    errors = [h for h in started if isinstance(h, BaseException)]
    if errors:
        for h in handles.values():
            h.stop()
        raise errors[0]
    return handles


@dataclass
class ServeProcess:
    """`coalmine serve` in a child process; stdout and stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    token: str
    gateway_url: str = ""
    api_url: str = ""
    _lines: list[str] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        return f"{self.api_url}/ui"

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _pump(stream: IO[bytes], sink: IO[bytes], lines: list[str], ready: threading.Event) -> None:
    """Copy the child's stdout to its log, noting the announcements; never blocks the child."""
    for raw in iter(stream.readline, b""):
        sink.write(raw)
        sink.flush()
        lines.append(raw.decode(errors="replace"))
        ready.set()
    ready.set()


def start_serve(
    work: Path, servers: Mapping[str, ModelServerHandle], timeout: float = 60.0
) -> ServeProcess:
    """`coalmine serve` over every version's server (the first is stable)."""
    token = secrets.token_urlsafe(24)
    pid_files = {}
    for version, handle in servers.items():
        pid_files[version] = work / f"serve-model-{version}.pid"
        pid_files[version].write_text(f"{handle.pid}\n")
    urls = {v: h.url for v, h in servers.items()}
    config = demo_config(work, urls, token, pid_files)
    config_path = work / "coalmine.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = work / "coalmine-serve.log"
    sink = open(log_path, "wb")  # noqa: SIM115 - owned by the pump thread for the child's life
    process = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=sink,
    )
    assert process.stdout is not None
    serve = ServeProcess(process, log_path, token)
    ready = threading.Event()
    threading.Thread(
        target=_pump, args=(process.stdout, sink, serve._lines, ready), daemon=True
    ).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in serve._lines:
            match = _ANNOUNCE.search(line)
            if match and match.group(1) == "gateway":
                serve.gateway_url = match.group(2)
            elif match:
                serve.api_url = match.group(2)
        if serve.gateway_url and serve.api_url:
            return serve
        if process.poll() is not None:
            raise RuntimeError(
                f"coalmine serve exited with code {process.returncode}:\n{serve.log_tail()}"
            )
        ready.wait(0.1)
        ready.clear()
    serve.stop()
    raise TimeoutError(f"coalmine serve did not announce its ports in {timeout:.0f}s")
