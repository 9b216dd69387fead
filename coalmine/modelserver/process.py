"""Start `serve-model` in its own process and wait until it is ready: for tests and the demo.

with start_model_server("model.joblib", name="iris", version="v2") as server:
    requests.post(f"{server.url}/v1/models/iris:predict", ...)
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["ModelServerHandle", "start_model_server", "start_model_server_async"]


@dataclass
class ModelServerHandle:
    """A running model server process; `stop()` sends SIGTERM and waits."""

    url: str
    name: str
    version: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._stopped:
            self._stopped = True
            if self.process.stdout is not None:
                self.process.stdout.close()
        return self.process.returncode

    def log(self) -> str:
        """What the server wrote to stderr (tracebacks, warnings)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ModelServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_model_server(
    model_path: str | Path,
    *,
    name: str | None = None,
    version: str = "1",
    port: int = 0,
    host: str = "127.0.0.1",
    delay_ms: float = 0.0,
    error_rate: float = 0.0,
    seed: int | None = None,
    flip_rate: float = 0.0,
    burn_cpu_ms: float = 0.0,
    leak_kb: float = 0.0,
    log_dir: str | Path | None = None,
    startup_timeout: float = 60.0,
) -> ModelServerHandle:
    """Spawn `python -m coalmine.modelserver` and return once it listens (port 0 = free)."""
    name = name or Path(model_path).stem
    args = [
        sys.executable, "-m", "coalmine.modelserver", str(model_path),
        "--port", str(port), "--host", host, "--name", name, "--version", version,
        "--delay-ms", str(delay_ms), "--error-rate", str(error_rate),
        "--flip-rate", str(flip_rate), "--burn-cpu-ms", str(burn_cpu_ms),
        "--leak-kb", str(leak_kb),
    ]  # fmt: skip
    if seed is not None:
        args += ["--seed", str(seed)]
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
    log_path = log_dir / f"coalmine-model-{name}-{version}-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr)
    handle = ModelServerHandle(
        url="", name=name, version=version, process=process, log_path=log_path
    )
    try:
        handle.url = _await_announcement(process, startup_timeout, log_path)
    except BaseException:
        handle.stop()
        raise
    return handle


async def start_model_server_async(model_path: str | Path, **kwargs: object) -> ModelServerHandle:
    """The same, without blocking the caller's event loop while the model loads."""
    return await asyncio.to_thread(start_model_server, model_path, **kwargs)  # type: ignore[arg-type]


def _await_announcement(process: subprocess.Popen[bytes], timeout: float, log_path: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"model server did not start within {timeout:.0f}s")
        ready, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
        if ready:
            line = process.stdout.readline()
            if not line:  # EOF: the process died before announcing
                process.wait()
                raise RuntimeError(_died(process, log_path))
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("event") == "listening":
                return str(message["url"])
        elif process.poll() is not None:
            raise RuntimeError(_died(process, log_path))


def _died(process: subprocess.Popen[bytes], log_path: Path) -> str:
    try:
        tail = log_path.read_text(errors="replace")[-2000:]
    except OSError:
        tail = ""
    return f"model server exited with code {process.returncode} before it was ready:\n{tail}"
