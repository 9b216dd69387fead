"""PromQL cpu/memory criteria in live rollouts, against a real Prometheus server scraping
real processes: `serve-model` processes (their /metrics: process_cpu_seconds_total,
process_resident_memory_bytes) labelled model/version as a Kubernetes relabelling would,
and the gateway of a real `coalmine serve` with two gateway processes
(coalmine_gateway_requests_total per version, one view across the processes).

A candidate burning CPU per call is rolled back naming `cpu`; one leaking memory per call,
naming `memory`; one as good as production is promoted with both judged on data. The
stack (stable version, `coalmine serve`, their scrape targets) is shared by the module's
rollouts, one after another; each candidate is a new version with its own process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, Traffic, serve_estimator
from tests.prometheus.conftest import PrometheusServer

X, Y = load_iris(return_X_y=True)
MODEL = LogisticRegression(max_iter=500).fit(X, Y)
NAME = "iris"
WINDOW = "4s"
CPU = {"metric": "cpu", "source": "prom", "window": WINDOW, "max_ratio": 2.5, "failures": 2}
MEMORY = {"metric": "memory", "source": "prom", "window": WINDOW, "max_ratio": 1.3}


def _spec(criteria: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "shadow": {"enabled": False},
        # each step lasts long enough for two windows, so a bad candidate is caught at 50%
        "canary": {"steps": [50, 100], "min_duration": 10, "max_duration": 60,
                   "min_samples": 10, "on_inconclusive": "fail",
                   "criteria": [{"metric": "error_rate", "rule_out": []}, *criteria]},
        "interval": 0.5,
    }  # fmt: skip


@dataclass
class Stack:
    cm: LocalCoalmine
    prometheus: PrometheusServer

    def rollout(
        self, version: str, faults: dict[str, Any], criteria: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Roll `version` (a new serve-model process with `faults`) out under traffic;
        the rollout's final state and its last judgement."""
        job = f"{NAME}-{version}"
        with serve_estimator(MODEL, NAME, version, **faults) as candidate:
            self.prometheus.scrape(job, f"{candidate.url}/metrics", model=NAME, version=version)
            try:
                self.prometheus.wait_for(f'up{{job="{job}"}} == 1', lambda r: bool(r), timeout=30)
                with Traffic(self.cm.gateway_url, NAME, X, Y, rate=16):
                    client = self.cm.client()
                    rollout = client.start_rollout(NAME, version, candidate.url, _spec(criteria))
                    final = rollout.wait(timeout=150)
                    judgement = client.judgement(final["id"])["judgement"]
            finally:
                self.prometheus.forget(job)
        return final, judgement


@pytest.fixture(scope="module")
def stack(
    prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    source = {"prom": {"type": "prometheus", "url": prometheus.url, "timeout_s": 5}}
    jobs = [f"{NAME}-v1", f"{NAME}-gateway"]
    with serve_estimator(MODEL, NAME, "v1") as v1:
        prometheus.scrape(jobs[0], f"{v1.url}/metrics", model=NAME, version="v1")
        cm = LocalCoalmine(
            {NAME: {"v1": v1}},
            workdir=tmp_path_factory.mktemp("coalmine"),
            config={
                "metric_sources": source,
                # the PromQL criteria judge here, not the fast guard
                # two gateway processes: the cpu query divides by their merged request counter
                "gateway": {"fast_guard_failures": 0, "canary_timeout_s": 10, "processes": 2},
            },
        )
        try:
            with cm:
                prometheus.scrape(jobs[1], f"{cm.gateway_url}/metrics")
                up = " or ".join(f'up{{job="{j}"}} == 1' for j in jobs)
                prometheus.wait_for(f"count({up})", lambda r: bool(r) and r[0]["value"][1] == "2")
                yield Stack(cm, prometheus)
        finally:
            for job in jobs:
                prometheus.forget(job)


def _result(judgement: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [r for r in judgement["results"] if r["name"] == name and not r["slice"]]
    return found


def test_a_candidate_burning_cpu_is_rolled_back_naming_cpu(stack: Stack) -> None:
    final, judgement = stack.rollout("v2", {"burn_cpu_ms": 6}, [CPU, MEMORY])
    assert final["phase"] == "rolled_back", final["reason"]
    assert "cpu (PromQL" in final["reason"], final["reason"]
    assert "breached in 2 consecutive windows" in final["reason"]
    cpu = _result(judgement, "cpu")
    assert cpu["verdict"].lower() == "fail" and cpu["n_candidate"] >= 2
    assert cpu["estimate"] > 2.5


@pytest.mark.slow
@pytest.mark.long  # the demo rolls a leaking candidate back on memory in make test
def test_a_candidate_leaking_memory_is_rolled_back_naming_memory(stack: Stack) -> None:
    final, _ = stack.rollout("v4", {"leak_kb": 400}, [CPU, MEMORY])
    assert final["phase"] == "rolled_back", final["reason"]
    assert "memory (PromQL" in final["reason"], final["reason"]


def test_a_spec_naming_an_unconfigured_source_is_refused(stack: Stack) -> None:
    spec = _spec([{**CPU, "source": "http://elsewhere:9090"}])
    r = httpx.post(
        f"{stack.cm.api_url}/api/v1/rollouts",
        json={"model": NAME, "candidate": "v9", "url": "http://127.0.0.1:9", "spec": spec},
        headers={"Authorization": f"Bearer {stack.cm.token}"},
        timeout=10,
    )
    assert r.status_code == 422, r.text
    assert "not a configured metric source" in r.text and "canary.criteria.1" in r.text


# last: it promotes, so the stack's stable version is this candidate afterwards
def test_a_good_candidate_is_promoted_with_both_judged_on_data(stack: Stack) -> None:
    final, judgement = stack.rollout("v3", {}, [CPU, MEMORY])
    assert final["phase"] == "promoted", final["reason"]
    for name in ("cpu", "memory"):
        result = _result(judgement, name)
        assert result["n_candidate"] >= 2 and result["n_baseline"] >= 1, result
        assert result["verdict"].lower() == "inconclusive"  # a guard rail never PASSes
