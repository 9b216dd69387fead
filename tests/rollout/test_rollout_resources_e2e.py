"""CPU and memory judged in a live rollout: real model servers exposing /metrics, a real
`coalmine serve` reading them through the configured `metrics_url`, real traffic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.modelserver import ModelServerHandle
from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

pytestmark = pytest.mark.slow

X, Y = load_iris(return_X_y=True)
RESOURCES = [{"metric": "error_rate"}, {"metric": "cpu"}, {"metric": "memory"}]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ModelServerHandle]]:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    handles: dict[str, ModelServerHandle] = {}
    try:
        handles["v1"] = serve_estimator(model, "iris", "v1")
        handles["v2"] = serve_estimator(model, "iris", "v2")
        # 8 ms of CPU per call: several times what a call costs the model server
        handles["hot"] = serve_estimator(model, "iris", "hot", burn_cpu_ms=8)
        yield handles
    finally:
        for h in handles.values():
            h.stop()


def _coalmine(servers: dict[str, ModelServerHandle]) -> LocalCoalmine:
    versions = [{"name": v, "url": h.url, "metrics_url": f"{h.url}/metrics"}
                for v, h in servers.items()]  # fmt: skip
    models = [{"name": "iris", "versions": versions, "routing": {"stable": "v1"}}]
    return LocalCoalmine({"iris": {"v1": servers["v1"]}}, config={"models": models})


def _spec(min_duration: float) -> dict[str, Any]:
    # a window closes every 20 requests a version serves; the step waits for a few, and a
    # not_fail step advances only once cpu's CS has ruled out a regression beyond ~×1.28
    return fast_spec(
        shadow={"enabled": False},
        canary={
            "steps": [50],
            "min_duration": min_duration,
            "max_duration": 120,
            "criteria": RESOURCES,
        },
    )


def _last_judgement(rollout: Any) -> dict[str, Any]:
    judged = [e["judgement"] for e in rollout.events() if e.get("judgement")]
    return judged[-1]


def _sentences(rollout: Any) -> list[str]:
    return [r["sentence"] for r in _last_judgement(rollout)["results"] if r["slice"] is None]


def test_a_cpu_burning_candidate_is_rolled_back_naming_cpu(
    servers: dict[str, ModelServerHandle],
) -> None:
    with _coalmine(servers) as cm, Traffic(cm.gateway_url, "iris", X, Y, rate=100):
        # the step could last 60 s: on a loaded machine the windows come slowly
        rollout = cm.client().start_rollout("iris", "hot", servers["hot"].url, _spec(60))
        final = rollout.wait(timeout=180)
        assert final["phase"] == "rolled_back", _sentences(rollout)
        assert "cpu" in final["reason"], final["reason"]
        cpu = next(r for r in _last_judgement(rollout)["results"]
                   if r["name"] == "cpu" and r["slice"] is None)  # fmt: skip
        assert cpu["verdict"] == "FAIL" and cpu["n_candidate"] > 0 and cpu["n_baseline"] > 0
        assert cpu["estimate"] > 2  # several times production's CPU per request


def test_a_normal_candidate_is_promoted_with_cpu_and_memory_measured(
    servers: dict[str, ModelServerHandle],
) -> None:
    with _coalmine(servers) as cm, Traffic(cm.gateway_url, "iris", X, Y, rate=100):
        rollout = cm.client().start_rollout("iris", "v2", servers["v2"].url, _spec(10))
        final = rollout.wait(timeout=120)
        assert final["phase"] == "promoted", _sentences(rollout)
        results = {r["name"]: r for r in _last_judgement(rollout)["results"]
                   if r["slice"] is None}  # fmt: skip
        for name in ("cpu", "memory"):
            assert results[name]["verdict"] != "FAIL"
            assert results[name]["n_candidate"] > 0 and results[name]["n_baseline"] > 0
        # each recorded judgement carries both versions' newest window: the dashboard's and
        # the report's CPU and memory charts per version are drawn from them
        windows = _last_judgement(rollout)["resources"]
        assert set(windows) == {"v1", "v2"}
        for w in windows.values():
            assert w["windows"] >= 1 and w["cpu_ms_per_request"] > 0 and w["memory_mb"] > 10
