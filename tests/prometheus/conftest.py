"""A real Prometheus server (Debian's `prometheus`) for the session, scraping every second.

Tests add what it scrapes with `prometheus.scrape(job, url)`: a file_sd target file that
Prometheus picks up within a second or two; each test uses its own job names, so one server
serves the whole session. `.ci/run` installs the package; without it these tests skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tests
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 1s
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    def __init__(self, url: str, targets: Path) -> None:
        self.url = url
        self.targets = targets

    def scrape(self, job: str, url: str, **labels: str) -> None:
        """Scrape `url` (http://host:port/path) every second as job `job`."""
        parts = urllib.parse.urlsplit(url)
        group = {
            "targets": [parts.netloc],
            "labels": {"job": job, "__metrics_path__": parts.path or "/metrics", **labels},
        }
        tmp = self.targets / f".{job}.tmp"
        tmp.write_text(json.dumps([group]))
        tmp.rename(self.targets / f"{job}.json")  # whole file or none: Prometheus watches

    def forget(self, job: str) -> None:
        (self.targets / f"{job}.json").unlink(missing_ok=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` gives now: [{"metric": {...}, "value": [ts, "v"]}]."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        data = r.json()["data"]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def wait_for(
        self, promql: str, ok: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result = self.query(promql)
        while not ok(result):
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql}: still {result} after {timeout} s")
            time.sleep(0.25)
            result = self.query(promql)
        return result


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus not installed (Debian package `prometheus`; .ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix="coalmine-prometheus-"))
    targets = root / "targets"
    targets.mkdir()
    config = root / "prometheus.yml"
    config.write_text(CONFIG.format(targets=targets))
    port = _free_port()
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
        yield PrometheusServer(url, targets)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
