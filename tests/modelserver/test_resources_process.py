"""serve-model's /metrics and resource faults, read by both resource sources, as real
processes on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from coalmine.analysis.sources.prometheus import PrometheusSource, parse_process_metrics
from coalmine.analysis.sources.resources import ProcessSource, resource_sources
from coalmine.config import ConfigError, parse_config
from coalmine.modelserver import ModelServerHandle, start_model_server

ROW = [5.1, 3.5, 1.4, 0.2]


def _call(server: ModelServerHandle, n: int) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            r = client.post(f"{server.url}/v1/models/iris:predict", json={"instances": [ROW]})
            assert r.status_code == 200


def test_metrics_expose_the_standard_process_metrics(iris_server: ModelServerHandle) -> None:
    r = httpx.get(f"{iris_server.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "process_cpu_seconds_total " in r.text
    assert "process_resident_memory_bytes " in r.text
    reading = PrometheusSource(f"{iris_server.url}/metrics").read()
    assert reading is not None and reading.memory_bytes > 20 * 2**20 and reading.cpu_seconds > 0


def test_burn_and_leak_are_seen_by_the_prometheus_and_the_pid_source(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    with start_model_server(model_files["iris"], name="iris", version="hot",
                            burn_cpu_ms=25, leak_kb=1024) as server:  # fmt: skip
        prom = PrometheusSource(f"{server.url}/metrics")
        (tmp_path / "hot.pid").write_text(f"{server.pid}\n")
        local = ProcessSource(pid_file=tmp_path / "hot.pid")
        before_p, before_l = prom.read(), local.read()
        _call(server, 40)
        after_p, after_l = prom.read(), local.read()
        assert before_p and after_p and before_l and after_l
        # 40 calls × 25 ms of CPU burned each: at least a second of CPU
        assert after_p.cpu_seconds - before_p.cpu_seconds >= 0.95
        assert after_l.cpu_seconds - before_l.cpu_seconds >= 0.95
        # × 1 MB kept each
        assert after_p.memory_bytes - before_p.memory_bytes >= 30 * 2**20
        assert after_l.memory_bytes - before_l.memory_bytes >= 30 * 2**20
        assert abs(after_l.memory_bytes - after_p.memory_bytes) < 0.2 * after_p.memory_bytes


def test_unreadable_sources_give_no_reading_and_never_raise(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens there
    assert PrometheusSource(f"http://user:secret@127.0.0.1:{port}/metrics").read() is None
    assert ProcessSource(pid_file=tmp_path / "missing.pid").read() is None
    assert parse_process_metrics("# nothing here\nother_metric 1\n") is None


def test_sources_come_from_the_server_config_only() -> None:
    config = parse_config({
        "models": [{
            "name": "iris",
            "versions": [
                {"name": "v1", "url": "http://127.0.0.1:9001",
                 "metrics_url": "http://127.0.0.1:9101/metrics"},
                {"name": "v2", "url": "http://127.0.0.1:9002", "pid_file": "/run/v2.pid"},
                {"name": "v3", "url": "http://127.0.0.1:9003"},
            ],
            "routing": {"stable": "v1"},
        }],
    })  # fmt: skip
    sources = resource_sources(config.models)
    assert set(sources) == {("iris", "v1"), ("iris", "v2")}
    assert isinstance(sources[("iris", "v1")], PrometheusSource)
    assert isinstance(sources[("iris", "v2")], ProcessSource)


def test_a_version_takes_one_resource_source() -> None:
    with pytest.raises(ConfigError, match="metrics_url or pid_file"):
        parse_config({"models": [{"name": "iris", "versions": [
            {"name": "v1", "url": "http://127.0.0.1:9001",
             "metrics_url": "http://127.0.0.1:9101/metrics", "pid_file": "/run/v1.pid"},
        ]}]})  # fmt: skip
