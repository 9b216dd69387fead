"""Scores in a live rollout: a binary classifier served by `serve-model` (V1, probabilities
named by its classes) through the real gateway and controller of `coalmine serve`, labelled
traffic, and a shadow judged on log_loss and auc — each with data on both sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

SCORED = ("log_loss", "auc")


def test_a_live_shadow_judges_log_loss_and_auc_on_logged_scores(tmp_path: Path) -> None:
    data = load_breast_cancer()
    x, y = data.data, np.asarray(data.target_names)[data.target]  # "malignant" / "benign"
    current = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    retrained = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000)).fit(x, y)
    spec = fast_spec(
        shadow={
            "min_samples": 60,
            "then": "promote",
            "criteria": [
                {"metric": "error_rate"},
                {"metric": "log_loss", "margin": 0.5, "must": "pass"},
                {"metric": "auc", "margin": 0.2, "must": "pass"},
            ],
        }
    )
    with (
        serve_estimator(current, "cancer", "v1") as v1,
        serve_estimator(retrained, "cancer", "v2") as v2,
        LocalCoalmine({"cancer": {"v1": v1}}, workdir=tmp_path) as cm,
        Traffic(cm.gateway_url, "cancer", x, y, rate=120, label_delay=0.2) as traffic,
    ):
        rollout = cm.client().start_rollout("cancer", "v2", v2.url, spec)
        final = rollout.wait(timeout=90, poll_s=0.3)
        assert final["phase"] == "promoted", (final, cm.logs()[-3000:])
        judgement = cm.client().judgement(rollout.id)
    assert traffic.label_errors == 0 and traffic.labelled > 0
    results = {r["metric"]: r for r in judgement["judgement"]["results"] if r["slice"] is None}
    for metric in SCORED:
        result = results[metric]
        assert result["n_candidate"] > 0 and result["n_baseline"] > 0, result
        assert result["verdict"] == "PASS", result
    # near-identical models: log loss about equal, AUC about equal
    assert abs(results["log_loss"]["estimate"]) < 0.2
    assert abs(results["auc"]["estimate"]) < 0.1
