"""A real `coalmine serve` with both tokens set: each guards its door, neither is logged."""

from __future__ import annotations

import time

import httpx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, Traffic, serve_estimator

API_TOKEN = "Api7XfR2mLp9WvK4sT8nB3yH6jD1cG5eQ"
FEEDBACK_TOKEN = "Fdb9Lm2Qx7WpR4sK8vT3nB6yH1jD5cGz"


def test_both_tokens_guard_their_endpoints_and_never_reach_the_log() -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    config = {"gateway": {"feedback_token": FEEDBACK_TOKEN}}
    with (
        serve_estimator(model, "iris", "v1") as v1,
        LocalCoalmine({"iris": {"v1": v1}}, config=config, token=API_TOKEN) as cm,
    ):
        with Traffic(
            cm.gateway_url, "iris", X, y, rate=50, label_delay=0.1, feedback_token=FEEDBACK_TOKEN
        ) as traffic:
            deadline = time.monotonic() + 30
            while traffic.labelled < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert traffic.labelled >= 20, cm.logs()[-2000:]  # the token holder labels
        feedback = f"{cm.gateway_url}/v1/feedback"
        label = {"request_id": "anything", "label": 1}
        for auth in ({}, {"Authorization": f"Bearer {API_TOKEN}"}):  # the API's is not it
            assert httpx.post(feedback, json=label, headers=auth).status_code == 401
        models = f"{cm.api_url}/api/v1/models"
        wrong = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
        assert httpx.get(models, headers=wrong).status_code == 403
        assert httpx.get(models, headers={"Authorization": f"Bearer {API_TOKEN}"}).is_success
        logs = cm.logs()
    assert API_TOKEN[:12] not in logs and FEEDBACK_TOKEN[:12] not in logs
