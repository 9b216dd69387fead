"""One /metrics across the gateway's processes (`gateway.processes: 2`), scraped by a real
Prometheus: every scrape, whichever process the kernel hands it to, shows the totals over
both processes; a killed worker's counts stay and its gauges go; a restart starts clean.
(Before: each process answered with its own counters, so scrapes alternated between two
halves of the traffic and Prometheus saw counter resets.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import psutil
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.modelserver import ModelServerHandle, start_model_server
from tests.gateway.conftest import make_config
from tests.prometheus.conftest import PrometheusServer

X, _ = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerHandle]:
    path = tmp_path_factory.mktemp("model") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, load_iris().target), path)
    with start_model_server(path, name="m", version="v1") as server:
        yield server


class Gateway:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process, self.url = process, url

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


def start_gateway(
    tmp_path: Path, upstream: str, processes: int = 2, metrics_dir: Path | None = None
) -> Gateway:
    gateway = {} if metrics_dir is None else {"metrics_dir": str(metrics_dir)}
    config = make_config(tmp_path, {"v1": upstream}, gateway=gateway)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    process = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "gateway", "--config", str(path),
         "--port", "0", "--processes", str(processes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    # each worker announces itself; two announcements may share a line (one pipe)
    text = ""
    while text.count("listening on") < processes:
        line = process.stdout.readline().decode()
        if not line:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"gateway did not start: {text!r}")
        text += line
    urls = set(re.findall(r"listening on (http://\S+)", text))
    [url] = urls
    return Gateway(process, url)


def scrape(url: str) -> dict[str, float]:
    """One scrape on a new connection (so the kernel picks a process each time):
    sample name + sorted labels -> value."""
    body = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


REQUESTS = "coalmine_gateway_requests_total{model=m,role=stable,version=v1}"
LATENCY_COUNT = "coalmine_gateway_latency_seconds_count{model=m,role=stable,version=v1}"


def send(url: str, n: int) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            r = client.post(
                f"{url}/v1/models/m:predict",
                json={"instances": [X[i % len(X)].tolist()]},
                headers={"Connection": "close"},  # spread over both processes
            )
            assert r.status_code == 200, r.text


def test_every_scrape_shows_the_totals_of_both_processes(
    tmp_path: Path, model_server: ModelServerHandle, prometheus: PrometheusServer
) -> None:
    metrics_dir = tmp_path / "metrics"
    gw = start_gateway(tmp_path, model_server.url, metrics_dir=metrics_dir)
    try:
        assert len(gw.workers()) == 2
        prometheus.scrape("gateway-totals", gw.url)
        sent, seen = 0, []
        for batch in (40, 60, 100):
            send(gw.url, batch)
            sent += batch
            for _ in range(12):
                page = scrape(gw.url)
                seen.append(page[REQUESTS])
                # every call is in the page, whichever process answered the scrape
                assert page[REQUESTS] == sent
                assert page[LATENCY_COUNT] == sent
        assert seen == sorted(seen)
        # both workers served calls (else this would prove nothing about merging)
        for worker in gw.workers():
            own = MmapedDict.read_all_values_from_file(
                str(metrics_dir / f"counter_calls-{worker.pid}.db")
            )
            assert 0 < sum(value for _, value, _, _ in own) < sent

        job = 'job="gateway-totals"'
        prometheus.wait_for(
            f"sum(coalmine_gateway_requests_total{{{job}}})",
            lambda r: bool(r) and float(r[0]["value"][1]) == sent,
        )
        # scrapes through either process never saw the counter go back
        [resets] = prometheus.query(f"sum(resets(coalmine_gateway_requests_total{{{job}}}[5m]))")
        assert float(resets["value"][1]) == 0
        [count] = prometheus.query(f"sum(coalmine_gateway_latency_seconds_count{{{job}}})")
        assert float(count["value"][1]) == sent

        # a worker killed outright: its counts stay in the totals, its gauges leave the sum
        victim, survivor = gw.workers()
        victim.kill()
        victim.wait(10)
        send(gw.url, 10)
        sent += 10
        page = scrape(gw.url)
        assert page[REQUESTS] == sent
        rss = survivor.memory_info().rss
        assert abs(page["process_resident_memory_bytes{}"] - rss) < 0.2 * rss
    finally:
        prometheus.forget("gateway-totals")
        gw.stop()


@pytest.mark.slow  # three gateway starts
@pytest.mark.long
def test_a_restart_starts_from_zero_and_leaves_no_files(
    tmp_path: Path, model_server: ModelServerHandle
) -> None:
    metrics_dir = tmp_path / "metrics"
    gw = start_gateway(tmp_path, model_server.url, metrics_dir=metrics_dir)
    try:
        send(gw.url, 20)
        assert scrape(gw.url)[REQUESTS] == 20
    finally:
        assert gw.stop() == 0
    # a new run in the same directory: the old run's files are not added to its totals
    gw = start_gateway(tmp_path, model_server.url, metrics_dir=metrics_dir)
    try:
        send(gw.url, 5)
        assert scrape(gw.url)[REQUESTS] == 5
    finally:
        assert gw.stop() == 0
    # without gateway.metrics_dir, a temporary directory of the run's own, removed at exit
    gw = start_gateway(tmp_path, model_server.url)
    pid = gw.process.pid
    try:
        send(gw.url, 3)
        assert scrape(gw.url)[REQUESTS] == 3
        assert list(Path(tempfile.gettempdir()).glob(f"coalmine-metrics-{pid}-*"))
    finally:
        assert gw.stop() == 0
    assert not list(Path(tempfile.gettempdir()).glob(f"coalmine-metrics-{pid}-*"))


def test_one_process_serves_its_own_registry(
    tmp_path: Path, model_server: ModelServerHandle
) -> None:
    gw = start_gateway(tmp_path, model_server.url, processes=1)
    try:
        send(gw.url, 7)
        page = scrape(gw.url)
        assert page[REQUESTS] == 7
        assert "python_info{" in "".join(page)  # the ordinary default registry, unmerged
    finally:
        assert gw.stop() == 0
