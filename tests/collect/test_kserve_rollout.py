"""A rollout judged and decided from KServe logger events alone.

Real processes: `coalmine serve` (its collector endpoint and controller) and two
`coalmine serve-model` processes standing in for the InferenceServices' predictors. The
test plays KServe's part: it calls the predictor as KServe's canary split would, calls the
shadow InferenceService as a mesh mirror would, and sends the logger's events exactly as
KServe's logger sends them (tests/collect/kserve_logger.py), halves in random order. No
request passes through Coalmine's gateway.
"""

from __future__ import annotations

import random
import sqlite3
import time
import uuid
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, fast_spec, serve_estimator
from tests.collect.kserve_logger import KServeLogger

X, Y = load_iris(return_X_y=True)
SECRET = "kserve-logger-secret-0123456789"
TERMINAL = {"promoted", "rolled_back", "aborted", "completed"}


def _call_and_log(
    http: httpx.Client, logger: KServeLogger, model_url: str, row: list[float], rid: str,
    rng: random.Random, endpoint: str = "default",
) -> Any:  # fmt: skip
    """One call as KServe makes and logs it: the predictor's answer, two events."""
    body = httpx.Request("POST", "/", json={"instances": [row]}).content
    t0 = time.time()
    answer = http.post(f"{model_url}/v1/models/iris:predict", content=body)
    t1 = time.time()
    call_id = str(uuid.UUID(int=rng.getrandbits(128)))  # no Ce-Id sent: the logger's own
    meta = {"X-Request-Id": [rid]}  # the logger's metadataHeaders forwards it
    halves = [("request", t0, body), ("response", t1, answer.content)]
    rng.shuffle(halves)  # the logger's workers send them in either order
    for kind, ts, payload in halves:
        status = logger.send(kind, call_id, ts, payload, endpoint=endpoint, metadata=meta)
        assert status == 200, status
    return answer.json()["predictions"][0]


@pytest.mark.slow
def test_a_rollout_is_judged_and_promoted_from_kserve_logger_events() -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y)
    rng = random.Random(7)
    with (
        serve_estimator(estimator, "iris", "v1") as v1,
        serve_estimator(estimator, "iris", "v2") as v2,
        LocalCoalmine(
            {"iris": {"v1": v1}},
            config={"collect": {"kserve": {
                "secret": SECRET,
                "services": [{"service": "iris-shadow", "model": "iris", "role": "shadow"}],
            }}},
        ) as cm,
        httpx.Client(timeout=10) as http,
    ):  # fmt: skip
        collector = f"{cm.api_url}/collect/kserve/{SECRET}"
        production = KServeLogger(http, collector, "iris")
        shadow = KServeLogger(http, collector, "iris-shadow")
        wrong = KServeLogger(http, f"{cm.api_url}/collect/kserve/not-the-secret-xxxxx", "iris")
        assert wrong.send("request", "x", time.time(), b"{}") == 404
        unknown = KServeLogger(http, collector, "nobody")
        assert unknown.send("request", "x", time.time(), b"{}") == 422
        client = cm.client()
        rollout = client.start_rollout("iris", "v2", v2.url, spec=fast_spec())
        labels: list[dict[str, Any]] = []
        route: dict[str, Any] = {}
        route_at = 0.0
        deadline = time.monotonic() + 150
        n = accepted = 0
        while time.monotonic() < deadline:
            if time.monotonic() - route_at > 0.2:
                route, route_at = client.model("iris"), time.monotonic()
                if route["active_rollout"] is None:
                    break
            i = rng.randrange(len(X))
            rid = f"req-{n}"
            n += 1
            on_canary = route["canary"] and rng.random() * 100 < route["canary_weight"]
            served = _call_and_log(
                http, production, v2.url if on_canary else v1.url, X[i].tolist(), rid, rng,
                endpoint="canary" if on_canary else "default",
            )  # fmt: skip
            assert served in (0, 1, 2)
            if route["shadow"]:  # the mesh mirrors the call to the shadow InferenceService
                _call_and_log(http, shadow, v2.url, X[i].tolist(), rid, rng)
            labels.append({"request_id": rid, "label": int(Y[i])})
            if len(labels) >= 20:
                r = http.post(f"{cm.gateway_url}/v1/feedback", json={"items": labels})
                assert r.status_code == 200, r.text
                # all but calls sent on a route the controller just changed: KServe's
                # canary endpoint after the promotion has no canary to be (counted unrouted)
                accepted += r.json()["accepted"]
                labels = []
        final = client.status(rollout.id)
        assert final["phase"] == "promoted", (final, cm.logs()[-3000:])
        with sqlite3.connect(cm.db_path) as conn:
            by_arm = dict(
                conn.execute(
                    "SELECT version || '/' || role, count(*) FROM predictions "
                    "WHERE rollout_id = ? GROUP BY 1", (rollout.id,),
                ).fetchall()
            )  # fmt: skip
            paired = conn.execute(
                "SELECT count(*) FROM predictions s JOIN predictions p "
                "ON s.request_id = p.request_id WHERE s.role = 'shadow' AND p.role = 'stable'"
            ).fetchone()[0]
        assert by_arm.get("v2/shadow", 0) >= 20 and by_arm.get("v2/canary", 0) >= 10, by_arm
        assert by_arm.get("v1/stable", 0) >= 20, by_arm
        assert paired >= 20  # the shadow's rows pair with production's on the request id
        assert accepted >= 0.9 * n, (accepted, n)
