"""PromQL cpu/memory criteria in live rollouts, against a real Prometheus server scraping
real processes: two `serve-model` processes (their /metrics: process_cpu_seconds_total,
process_resident_memory_bytes) labelled model/version as a Kubernetes relabelling would,
and the gateway of a real `coalmine serve` (coalmine_gateway_requests_total per version).

A candidate burning CPU per call is rolled back naming `cpu`; one leaking memory per call,
naming `memory`; one as good as production is promoted with both judged on data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, Traffic, serve_estimator
from tests.prometheus.conftest import PrometheusServer

X, Y = load_iris(return_X_y=True)
MODEL = LogisticRegression(max_iter=500).fit(X, Y)
WINDOW = "4s"


def _spec(criteria: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "shadow": {"enabled": False},
        # each step lasts long enough for a few windows, so a bad candidate is caught at 50%
        "canary": {"steps": [50, 100], "min_duration": 10, "max_duration": 60,
                   "min_samples": 10, "on_inconclusive": "fail",
                   "criteria": [{"metric": "error_rate", "rule_out": []}, *criteria]},
        "interval": 0.5,
    }  # fmt: skip


CPU = {"metric": "cpu", "source": "prom", "window": WINDOW, "max_ratio": 2.5, "failures": 2}
MEMORY = {"metric": "memory", "source": "prom", "window": WINDOW, "max_ratio": 1.3}


def run_rollout(
    tmp_path: Path,
    prometheus: PrometheusServer,
    model: str,
    candidate: dict[str, Any],
    criteria: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rollout's final state and its last judgement."""
    jobs = [f"{model}-v1", f"{model}-v2", f"{model}-gateway"]
    with (
        serve_estimator(MODEL, model, "v1") as v1,
        serve_estimator(MODEL, model, "v2", **candidate) as v2,
    ):
        prometheus.scrape(jobs[0], f"{v1.url}/metrics", model=model, version="v1")
        prometheus.scrape(jobs[1], f"{v2.url}/metrics", model=model, version="v2")
        source = {"prom": {"type": "prometheus", "url": prometheus.url, "timeout_s": 5}}
        cm = LocalCoalmine({model: {"v1": v1}}, workdir=tmp_path,
                           config={"metric_sources": source,
                                   # the PromQL criteria judge here, not the fast guard
                                   "gateway": {"fast_guard_failures": 0,
                                               "canary_timeout_s": 10}})  # fmt: skip
        try:
            with cm:
                prometheus.scrape(jobs[2], f"{cm.gateway_url}/metrics")
                up = " or ".join(f'up{{job="{j}"}} == 1' for j in jobs)
                prometheus.wait_for(f"count({up})", lambda r: bool(r) and r[0]["value"][1] == "3")
                with Traffic(cm.gateway_url, model, X, Y, rate=16):
                    client = cm.client()
                    rollout = client.start_rollout(model, "v2", v2.url, _spec(criteria))
                    final = rollout.wait(timeout=150)
                    judgement = client.judgement(final["id"])
        finally:
            for job in jobs:
                prometheus.forget(job)
    return final, judgement["judgement"]


def _result(judgement: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [r for r in judgement["results"] if r["name"] == name and not r["slice"]]
    return found


def test_a_candidate_burning_cpu_is_rolled_back_naming_cpu(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    final, judgement = run_rollout(tmp_path, prometheus, "burn", {"burn_cpu_ms": 6}, [CPU, MEMORY])
    assert final["phase"] == "rolled_back", final["reason"]
    assert "cpu (PromQL" in final["reason"], final["reason"]
    assert "breached in 2 consecutive windows" in final["reason"]
    cpu = _result(judgement, "cpu")
    assert cpu["verdict"].lower() == "fail" and cpu["n_candidate"] >= 2
    assert cpu["estimate"] > 2.5


def test_a_good_candidate_is_promoted_with_both_judged_on_data(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    final, judgement = run_rollout(tmp_path, prometheus, "good", {}, [CPU, MEMORY])
    assert final["phase"] == "promoted", final["reason"]
    for name in ("cpu", "memory"):
        result = _result(judgement, name)
        assert result["n_candidate"] >= 2 and result["n_baseline"] >= 1, result
        assert result["verdict"].lower() == "inconclusive"  # a guard rail never PASSes by itself


@pytest.mark.slow
def test_a_candidate_leaking_memory_is_rolled_back_naming_memory(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    final, _ = run_rollout(tmp_path, prometheus, "leak", {"leak_kb": 400}, [CPU, MEMORY])
    assert final["phase"] == "rolled_back", final["reason"]
    assert "memory (PromQL" in final["reason"], final["reason"]
