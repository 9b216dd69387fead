"""A paired canary end to end: `coalmine serve` (gateway, API, controller) in its own process,
scikit-learn models in real model-server processes, labelled traffic through the gateway.

The candidate sees the sepals only (about 15 points less accurate). With `canary.paired` the
stable version also answers a copy of each canary request (role "paired"); the controller
judges accuracy on those pairs and rolls the candidate back, while every user got an answer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

pytestmark = pytest.mark.slow

X, Y = load_iris(return_X_y=True)


def test_a_paired_canary_judges_accuracy_on_pairs_and_rolls_back_a_worse_model(
    tmp_path: Path,
) -> None:
    current = LogisticRegression(max_iter=500).fit(X, Y)
    worse = make_pipeline(
        ColumnTransformer([("sepal", "passthrough", [0, 1])]), LogisticRegression(max_iter=500)
    ).fit(X, Y)
    spec = fast_spec(
        shadow={"enabled": False},
        canary={"steps": [20, 100], "paired": True, "min_samples": 10,
                "criteria": [{"metric": "error_rate"}, {"metric": "accuracy", "margin": 0.05}]},
    )  # fmt: skip
    with (
        serve_estimator(current, "iris", "v1") as v1,
        serve_estimator(worse, "iris", "v3") as v3,
        LocalCoalmine({"iris": {"v1": v1}}, workdir=tmp_path) as cm,
    ):
        client = cm.client()
        with Traffic(cm.gateway_url, "iris", X, Y, rate=100, label_delay=0.2) as traffic:
            rollout = client.start_rollout("iris", "v3", v3.url, spec)
            final = rollout.wait(timeout=90, poll_s=0.3)
            events = rollout.events()
        assert final["phase"] == "rolled_back", (final, cm.logs()[-2000:])
        assert "accuracy" in final["reason"] and "FAIL" in final["reason"]
        assert traffic.statuses == {200: traffic.sent}

    # the judgement that failed it compared pairs: as many stable answers as canary ones
    judged = [e["judgement"] for e in events if e.get("judgement")]
    accuracy = [r for j in judged for r in j["results"]
                if r["name"] == "accuracy" and r.get("slice") is None]  # fmt: skip
    failing = [r for r in accuracy if r["verdict"] == "FAIL"]
    assert failing, accuracy
    assert failing[-1]["n_candidate"] == failing[-1]["n_baseline"] > 0
    errors = [r for j in judged for r in j["results"] if r["name"] == "error_rate"]
    # error rate on served calls: stable served ~4 times the canary's users at 20%
    assert errors[-1]["n_baseline"] > 2 * errors[-1]["n_candidate"] > 0

    with sqlite3.connect(cm.db_path) as db:
        paired = dict(db.execute(
            "SELECT version, count(*) FROM predictions WHERE role = 'paired' GROUP BY version"
        ).fetchall())  # fmt: skip
        unmatched = db.execute(
            "SELECT count(*) FROM predictions p WHERE p.role = 'paired' AND NOT EXISTS "
            "(SELECT 1 FROM predictions c WHERE c.request_id = p.request_id "
            "AND c.role = 'canary')"
        ).fetchone()[0]
    assert set(paired) == {"v1"} and paired["v1"] > 0  # the stable version's copies
    assert unmatched == 0  # only canary requests were copied
