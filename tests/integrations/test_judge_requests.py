"""The judge endpoints' other paths on a real API: shadow mode, Flagger's gate table, and
malformed requests (always a 4xx naming the field, never a 500)."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import httpx
import pytest

from coalmine.integrations.flagger import HOOKS, gate_open
from coalmine.log.record import PredictionRecord
from coalmine.store.feedback import FeedbackStore
from coalmine.store.predictions import insert_batch
from tests.integrations.conftest import JUDGE_TOKEN, Stack

http = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
AUTH = {"Authorization": f"Bearer {JUDGE_TOKEN}"}


def test_flaggers_gates_open_on_the_documented_verdicts() -> None:
    table = {hook: [v for v in ("PASS", "INCONCLUSIVE", "FAIL") if gate_open(hook, v)]
             for hook in HOOKS}  # type: ignore[arg-type]  # fmt: skip
    assert table == {
        "pre-rollout": ["PASS", "INCONCLUSIVE"],
        "rollout": ["PASS", "INCONCLUSIVE"],
        "confirm-traffic-increase": ["PASS"],
        "confirm-promotion": ["PASS"],
        "rollback": ["FAIL"],
    }


def _mirrored(stack: Stack, shadow: str, flip: float, n: int, seed: int) -> None:
    """`n` requests answered by production v1 and mirrored to `shadow`, which answers
    differently on a `flip` share of them, with labels: as a mesh mirror logs them."""
    rng = random.Random(seed)
    t0 = time.time() - 300
    rows, labels = [], []
    for i in range(n):
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        truth = rng.randrange(3)
        prod = truth if rng.random() < 0.9 else (truth + 1) % 3
        cand = (prod + 1) % 3 if rng.random() < flip else prod
        for version, role, said in (("v1", "stable", prod), (shadow, "shadow", cand)):
            rows.append(PredictionRecord(
                request_id=rid, model="iris", version=version, role=role, ts=t0 + i * 0.05,
                latency_ms=20 + rng.random(), status=200, prediction=said,
            ))  # fmt: skip
        labels.append({"request_id": rid, "label": truth})
    insert_batch(stack.engine, rows)
    assert all(r.ok for r in FeedbackStore(stack.engine).add(labels))


SHADOW_SPEC = {"shadow": {"min_duration": 0, "min_samples": 200,
                          "criteria": [{"metric": "agreement", "min": 0.9}]}}  # fmt: skip


@pytest.mark.parametrize(("shadow", "flip", "verdict"), [("s-same", 0.0, "PASS"),
                                                          ("s-off", 0.3, "FAIL")])  # fmt: skip
def test_shadow_mode_judges_the_mirrored_pairs(stack: Stack, shadow: str, flip: float,
                                               verdict: str) -> None:  # fmt: skip
    _mirrored(stack, shadow, flip, 1500, seed=len(shadow) + int(flip * 10))
    r = http.post(f"{stack.url}/api/v1/judge/models/iris", headers=AUTH,
                  json={"candidate": shadow, "mode": "shadow", "spec": SHADOW_SPEC})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] == verdict, body["reason"]
    assert body["mode"] == "shadow" and body["step"]["weight"] is None
    assert body["criteria"]["agreement"]["n_candidate"] == 1500


MALFORMED: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/judge/models/iris", {"candidate": "v2", "weight": "ten"}, "weight"),
    ("POST", "/api/v1/judge/models/iris", {"candidate": "v2", "mode": "blue"}, "mode"),
    ("POST", "/api/v1/judge/models/iris", {"candidate": "v2", "extra": 1}, "extra"),
    ("POST", "/api/v1/judge/models/iris", {"candidate": "../etc"}, "candidate"),
    ("POST", "/api/v1/judge/models/iris", {"candidate": "v1"}, "baseline"),
    ("POST", "/api/v1/judge/models/iris",
     {"candidate": "v2", "spec": {"canary": {"criteria": [{"metric": "acuracy"}]}}},
     "spec.canary.criteria.0.metric"),
    ("POST", "/api/v1/judge/models/iris",
     {"candidate": "v2", "spec": {"canary": {"criteria": [{"metric": "user:builtins:exec",
                                                            "min": 0}]}}},
     "spec.canary.criteria.0.metric"),
    ("POST", "/api/v1/judge/models/iris", [1, 2], "body"),
    ("POST", "/api/v1/judge/models/iris",
     {"candidate": "v2", "spec": {"canary": {"criteria": [
         {"metric": "error_rate"}, {"metric": "p99", "source": "prom", "max": 1}]}}},
     "spec.canary.criteria.1"),
    ("POST", "/api/v1/judge/flagger/rollback", {"namespace": "m"}, "name"),
    ("POST", "/api/v1/judge/flagger/rollback",
     {"name": "iris", "namespace": "m", "metadata": {"token": JUDGE_TOKEN, "weight": 5}},
     "metadata.weight"),
    ("POST", "/api/v1/judge/flagger/rollback",
     {"name": "iris", "namespace": "m", "metadata": {"token": JUDGE_TOKEN, "spec": "a: ["}},
     "metadata.spec"),
    ("POST", "/api/v1/judge/flagger/rollback",
     {"name": "iris", "namespace": "m", "metadata": {"token": JUDGE_TOKEN, "since": "inf"}},
     "metadata.since"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), MALFORMED)
def test_malformed_requests_are_refused_naming_the_field(
    stack: Stack, method: str, path: str, body: Any, field: str
) -> None:
    r = http.request(method, stack.url + path, json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields


def test_a_body_that_is_not_json_is_a_422(stack: Stack) -> None:
    r = http.post(f"{stack.url}/api/v1/judge/models/iris", content=b"{not json",
                  headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 422
