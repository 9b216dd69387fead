"""Rollouts fed by `coalmine.Router` alone: real `coalmine serve` (API, controller; its
gateway only takes the labels and, once, answers the same keys for comparison), real
`coalmine serve-model` processes called directly by the router, no proxy hop."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import coalmine
from coalmine.collect.router import http_model, v1_answer
from coalmine.testing import LocalCoalmine, fast_spec, serve_estimator

X, Y = load_iris(return_X_y=True)


class _Service:
    """An application calling its model through the Router, labels following later."""

    def __init__(self, router: Any, feedback_url: str) -> None:
        self.router = router
        self.feedback_url = feedback_url
        self.stop = threading.Event()
        self.rng = random.Random(3)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.served = 0

    def _run(self) -> None:
        due: list[tuple[float, str, int]] = []
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                i = self.rng.randrange(len(X))
                user = f"user{self.rng.randrange(300)}"
                answer = self.router.predict({"instances": [X[i].tolist()]}, key=user)
                self.served += 1
                due.append((time.monotonic() + 0.5, answer.request_id, int(Y[i])))
                ready = [d for d in due if d[0] <= time.monotonic()]
                if len(ready) >= 20:
                    items = [{"request_id": r, "label": y} for _, r, y in ready]
                    http.post(self.feedback_url, json={"items": items})
                    due = [d for d in due if d[0] > time.monotonic()]

    def __enter__(self) -> _Service:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _wait(client: Any, rollout_id: int, until: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(rollout_id)
        if until(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"rollout {rollout_id} still {status['phase']}")


@pytest.mark.slow
def test_router_fed_rollouts_are_judged_promoted_and_rolled_back() -> None:
    good = LogisticRegression(max_iter=500).fit(X, Y)
    with (
        serve_estimator(good, "iris", "v1") as v1,
        serve_estimator(good, "iris", "v2") as v2,
        serve_estimator(good, "iris", "v3", flip_rate=0.6, seed=1) as v3,
        LocalCoalmine({"iris": {"v1": v1}}) as cm,
        httpx.Client(timeout=10) as http,
    ):
        client = cm.client()
        router = coalmine.Router(
            "iris", {}, client=client, load=lambda version, url: http_model(url, "iris"),
            to_log=v1_answer, refresh_s=0.1, flush_s=0.1,
        )  # fmt: skip
        feedback = f"{cm.gateway_url}/v1/feedback"
        spec = fast_spec(canary={"steps": [30, 100], "approval_before": [100]})
        with router, _Service(router, feedback):
            rollout = client.start_rollout("iris", "v2", v2.url, spec=spec)
            _wait(client, rollout.id, lambda s: s["awaiting_approval"] is not None)
            deadline = time.monotonic() + 10
            while router.route["canary_weight_bp"] != 3000 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the gateway's table polls the route every 0.25 s
            # the router assigns every key as the gateway does at the same route
            for u in range(100):
                key = f"user{u}"
                r = http.post(cm.predict_url("iris"), json={"instances": [X[0].tolist()]},
                              headers={"X-User-Id": key})  # fmt: skip
                assert r.headers["X-Model-Version"] == router.assign(key)[1], key
            client.approve(rollout.id)
            final = _wait(
                client, rollout.id, lambda s: s["phase"] in coalmine.client.TERMINAL_PHASES
            )
            assert final["phase"] == "promoted", (final, cm.logs()[-2000:])

            bad = client.start_rollout("iris", "v3", v3.url, spec=fast_spec())
            final = _wait(client, bad.id, lambda s: s["phase"] in coalmine.client.TERMINAL_PHASES)
        assert final["phase"] == "rolled_back", final
        assert "accuracy" in str(final.get("reason")), final
        assert router.stats.mirrored > 0 and router.stats.log_dropped == 0
        assert router.stats.by_version.get("v2", 0) > 0
