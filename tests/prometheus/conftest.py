"""A real Prometheus server (Debian's `prometheus`) for the session, scraping every second.

Tests add what it scrapes with `prometheus.scrape(job, url)`: a file_sd target file that
Prometheus picks up within a second or two; each test uses its own job names, so one server
serves the whole session. `.ci/run` installs the package; without it these tests skip.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.prometheus_process import running_prometheus

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
    def configure(root: Path) -> str:
        (root / "targets").mkdir()
        return CONFIG.format(targets=root / "targets")

    with running_prometheus("coalmine-prometheus-", configure) as (url, root):
        yield PrometheusServer(url, root / "targets")
