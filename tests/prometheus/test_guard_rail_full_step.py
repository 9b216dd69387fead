"""At a 100% canary step the stable version is judged by its reading from an earlier step.

Found flaky in `test_promql_rollouts.py` (a good candidate rolled back, "candidate 1.458 vs
stable 0 ms CPU per request, ratio inf"): the first window read after the switch to 100%
still covers the stable version's last few requests, its CPU counter (10 ms a tick) had not
moved, and that 0 became the stable's "latest" value for every later window.

Through the rollout judge (`EngineJudge`) and the real `PrometheusQuery` client, against a
loopback HTTP server answering Prometheus's `/api/v1/query` as a real one would for these
readings (recorded numbers: what the straddling window gives, 0 for the stable): a real
Prometheus cannot be made to produce that window on demand.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from coalmine.analysis.promql import install_sources, installed_sources
from coalmine.analysis.sources.promql import PrometheusQuery
from coalmine.rollout.judge import EngineJudge
from coalmine.rollout.machine import Phase, RolloutState
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord

CPU = {"metric": "cpu", "source": "prom", "window": "4s", "max_ratio": 2.5, "failures": 2}


class _Readings:
    """CPU per request by version, as the Prometheus server answers now; the queries seen."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.asked: list[str] = []


@pytest.fixture
def prometheus() -> Iterator[tuple[str, _Readings]]:
    readings = _Readings()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            query = urllib.parse.parse_qs(self.rfile.read(length).decode())["query"][0]
            [version] = [v for v in readings.values if f'version="{v}"' in query]
            readings.asked.append(version)
            answer = {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [0, str(readings.values[version])]}]}}  # fmt: skip
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    before = installed_sources()
    install_sources({"prom": {}})
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", readings
    finally:
        install_sources(before)
        server.shutdown()
        server.server_close()


def _record(spec: Any, weight_bp: int) -> RolloutRecord:
    state = RolloutState(
        id=1, model="iris", candidate="v2", previous_stable="v1", spec=spec,
        phase=Phase.CANARY, started_at=0.0, step_started_at=0.0, canary_weight_bp=weight_bp,
    )  # fmt: skip
    return RolloutRecord(state, 1, "http://127.0.0.1:9", None, 0, 0.0, None)


def test_a_good_candidate_is_not_failed_on_the_stables_reading_after_the_switch(
    prometheus: tuple[str, _Readings], tmp_path: Path
) -> None:
    url, readings = prometheus
    spec = parse_spec({"canary": {"steps": [50, 100], "criteria": [CPU]}})
    judge = EngineJudge(
        create_engine(f"sqlite:///{tmp_path / 'c.db'}"),
        metric_sources={"prom": PrometheusQuery(url)},
    )
    # the 50% step: both read, the candidate as good as production
    readings.values = {"v2": 1.4, "v1": 1.3}
    judge._guard_rails(_record(spec, 5000), "canary", now=0.0)  # the phase opens
    [(result, status)] = judge._guard_rails(_record(spec, 5000), "canary", now=4.0)
    assert status == "ok" and readings.asked == ["v2", "v1"]
    # the 100% step: the stable serves nothing; a window would still read its last few
    # requests (CPU counter unmoved: 0 ms per request)
    readings.values = {"v2": 1.458, "v1": 0.0}
    readings.asked.clear()
    for now in (8.0, 12.0, 16.0):
        [(result, status)] = judge._guard_rails(_record(spec, 10_000), "canary", now=now)
        assert status == "ok", result.sentence  # before: "breaching", then "fail" (ratio inf)
    assert readings.asked == ["v2", "v2", "v2"]  # the stable version is not read at 100%
    assert result.baseline_value == 1.3  # judged against its reading at the 50% step
    # a candidate that does burn more than 2.5x still fails at 100%
    readings.values = {"v2": 4.0, "v1": 0.0}
    statuses = [judge._guard_rails(_record(spec, 10_000), "canary", now=t)[0][1]
                for t in (20.0, 24.0)]  # fmt: skip
    assert statuses == ["breaching", "fail"]
