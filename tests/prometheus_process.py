"""Debian's `prometheus` started as a real process on a loopback port, for the tests that
scrape with it (tests/prometheus, tests/integrations). `.ci/run` installs the package; without
it those tests skip."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@contextmanager
def running_prometheus(prefix: str, configure: Callable[[Path], str]) -> Iterator[tuple[str, Path]]:
    """Yield (base URL, its directory) of a Prometheus whose config `configure(directory)`
    returns (it may write token or target files there first); stopped and removed after."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    config = root / "prometheus.yml"
    config.write_text(configure(root))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus did not start: {(root / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url, root
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
