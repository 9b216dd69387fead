"""Rollouts with a baseline, end to end: real model-server processes (production, a fresh
baseline instance of the stable version, the candidate), `coalmine serve`, real traffic.

- canary: the baseline is routed the canary's share and the canary is judged against it,
  not against the long-running production (Kayenta's practice). Here the fresh instances
  are slow (cold caches, say: 60 ms) and the long-running production is fast: against the
  baseline the candidate's latency is like-for-like and it is promoted; without the
  baseline the same candidate fails its latency criterion and is rolled back.
- shadow: the mirrored copies go to the baseline too; production, baseline and candidate
  are all nondeterministic (15% of answers flipped), so the candidate agrees with
  production only ~75% of the time, as does the baseline: judged against that noise floor
  the candidate passes, where an absolute `agreement min 0.95` could never.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine import Client
from coalmine.modelserver import ModelServerHandle, start_model_server
from tests.rollout.conftest import TOKEN, Coalmine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    out = tmp_path_factory.mktemp("baseline-models")
    x, y = load_iris(return_X_y=True)
    paths = {}
    for name, c in (("v1", 1.0), ("v2", 0.5)):
        paths[name] = out / f"{name}.joblib"
        joblib.dump(LogisticRegression(C=c, max_iter=500).fit(x, y), paths[name])
    specs: dict[str, dict[str, Any]] = {
        "prod": {"path": paths["v1"], "version": "v1"},
        "fresh-baseline": {"path": paths["v1"], "version": "v1", "delay_ms": 60},
        "fresh-candidate": {"path": paths["v2"], "version": "v2", "delay_ms": 60},
        "noisy-prod": {"path": paths["v1"], "version": "v1", "flip_rate": 0.15, "seed": 1},
        "noisy-baseline": {"path": paths["v1"], "version": "v1", "flip_rate": 0.15, "seed": 2},
        "noisy-candidate": {"path": paths["v2"], "version": "v2", "flip_rate": 0.15, "seed": 3},
    }
    handles: dict[str, ModelServerHandle] = {}
    try:
        for key, s in specs.items():
            handles[key] = start_model_server(s.pop("path"), name="iris", log_dir=out, **s)
        yield {k: h.url for k, h in handles.items()}
    finally:
        for h in handles.values():
            h.stop()


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


CANARY: dict[str, Any] = {
    "steps": [20, 50, 100],
    "min_duration": 2,
    "max_duration": 60,
    "min_samples": 100,
    # the median, not p95: a quantile CS needs ~1/(1 − p)² samples, and p95 takes thousands
    "criteria": [{"metric": "error_rate"}, {"metric": "latency_p50", "max_ratio": 1.5}],
}


def _watch_route(db: Path, rollout: Any, timeout: float) -> tuple[dict[str, Any], set[Any]]:
    """Wait for the rollout to end, collecting the (canary, baseline) shares seen."""
    seen: set[Any] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(canary_bp, baseline_url, baseline_bp)] = _rows(
            db, "SELECT canary_weight_bp, baseline_url, baseline_bp FROM routes"
        )
        seen.add((canary_bp, baseline_bp, baseline_url is not None))
        status = rollout.status()
        if status["phase"] in ("promoted", "rolled_back", "aborted"):
            return status, seen
        time.sleep(0.2)
    raise TimeoutError(f"rollout did not end: {rollout.status()}")


@contextlib.contextmanager
def _serving(tmp_path: Path, stable_url: str, traffic_factory: Any) -> Iterator[Coalmine]:
    """`coalmine serve` over a model whose stable version is at `stable_url`, with traffic."""
    cm = Coalmine(tmp_path, stable_url)
    try:
        traffic_factory(cm.gateway_url, rate=150)
        yield cm
    finally:
        cm.stop()


CANARY_ONLY = {"shadow": {"enabled": False}, "canary": CANARY, "interval": 0.3}


def test_canary_is_judged_against_a_fresh_baseline(
    tmp_path: Path, servers: dict[str, str], traffic_factory: Any
) -> None:
    with (
        _serving(tmp_path, servers["prod"], traffic_factory) as cm,
        Client(cm.api_url, TOKEN) as client,
    ):
        rollout = client.start_rollout(
            "iris", "v2", servers["fresh-candidate"], CANARY_ONLY,
            baseline=servers["fresh-baseline"],
        )  # fmt: skip
        final, seen = _watch_route(cm.db, rollout, 120)
        events = rollout.events()
        assert final["phase"] == "promoted", final
        # the baseline had the canary's share at every step below 100%
        assert (2000, 2000, True) in seen and (5000, 5000, True) in seen
        assert all(c == b or c == 10_000 for c, b, _ in seen if b), seen
        [(url, bp)] = _rows(cm.db, "SELECT baseline_url, baseline_bp FROM routes")
        assert (url, bp) == (None, 0)  # cleared when the rollout ended
        # baseline rows are the stable version's, logged with their own role
        counts = dict(
            _rows(cm.db, "SELECT role, count(*) FROM predictions WHERE role IN "
                  "('baseline', 'canary') GROUP BY role")
        )  # fmt: skip
        assert counts["baseline"] > 100 and counts["canary"] > 100
        [(version,)] = _rows(
            cm.db, "SELECT DISTINCT version FROM predictions WHERE role='baseline'"
        )
        assert version == "v1"
        # the judgement compared the canary with the baseline: its baseline count is the
        # baseline's calls, not production's (which are several times more)
        advance = next(e for e in events if e["kind"] == "advance" and e["judgement"])
        latency = next(r for r in advance["judgement"]["results"] if r["name"] == "latency_p50")
        assert latency["verdict"] != "FAIL"
        assert latency["baseline_value"] > 20  # the slow fresh instance, not production's ~1 ms


def test_without_the_baseline_the_same_candidate_fails_against_production(
    tmp_path: Path, servers: dict[str, str], traffic_factory: Any
) -> None:
    with (
        _serving(tmp_path, servers["prod"], traffic_factory) as cm,
        Client(cm.api_url, TOKEN) as client,
    ):
        rollout = client.start_rollout("iris", "v2", servers["fresh-candidate"], CANARY_ONLY)
        final = rollout.wait(timeout=120, poll_s=0.3)
    assert final["phase"] == "rolled_back", final
    assert "latency_p50" in final["reason"]


def test_shadow_disagreement_is_measured_against_the_noise_floor(
    tmp_path: Path, servers: dict[str, str], traffic_factory: Any
) -> None:
    spec = {
        "shadow": {
            "min_duration": 1,
            "min_samples": 50,
            "max_duration": 90,
            "then": "stop",
            "criteria": [{"metric": "error_rate"},
                         {"metric": "agreement", "margin": 0.1, "must": "pass"}],
        },
        "interval": 0.3,
    }  # fmt: skip
    with (
        _serving(tmp_path, servers["noisy-prod"], traffic_factory) as cm,
        Client(cm.api_url, TOKEN) as client,
    ):
        rollout = client.start_rollout(
            "iris", "v2", servers["noisy-candidate"], spec, baseline=servers["noisy-baseline"]
        )
        final = rollout.wait(timeout=120, poll_s=0.3)
        events = rollout.events()
    assert final["outcome"] != "rolled_back", final
    passed = next(e for e in events if e["from_phase"] == "shadow")
    agreement = next(
        r for r in passed["judgement"]["results"] if r["name"] == "agreement" and not r["slice"]
    )
    assert agreement["verdict"] == "PASS", agreement
    assert "noise floor" in agreement["sentence"]
    # the same mirrored requests reached production, the candidate and the baseline
    triples = _rows(
        cm.db,
        "SELECT count(*) FROM (SELECT request_id FROM predictions GROUP BY request_id "
        "HAVING count(DISTINCT role) = 3)",
    )[0][0]
    assert triples > 50
    # and the candidate's raw agreement with production is far below 95%
    pairs = _rows(
        cm.db,
        "SELECT p.prediction = q.prediction FROM predictions p JOIN predictions q "
        "ON p.request_id = q.request_id WHERE p.role = 'shadow' AND q.role = 'stable'",
    )
    assert sum(a for (a,) in pairs) / len(pairs) < 0.9
