"""Logged scores reach log_loss and AUC: with class names or indices, one row or several."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from coalmine.analysis import Criterion, user_metrics
from coalmine.analysis.engine import Evaluator
from coalmine.analysis.outputs import binary_target, examples, log_loss, normalize, with_scores
from coalmine.analysis.sources.export import analyze_export
from coalmine.analysis.user_metrics import register_user_metric
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.export import iter_export, write_export
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback


def test_with_scores_pairs_each_instance_with_its_row() -> None:
    assert with_scores(["b"], [{"a": 0.2, "b": 0.8}]) == [
        {"label": "b", "scores": {"a": 0.2, "b": 0.8}}
    ]
    assert with_scores([1, 0], [[0.1, 0.9], [0.7, 0.3]]) == [
        {"label": 1, "scores": [0.1, 0.9]},
        {"label": 0, "scores": [0.7, 0.3]},
    ]
    assert with_scores([1], [0.1, 0.9]) == [{"label": 1, "scores": [0.1, 0.9]}]
    assert with_scores("b", {"a": 0.2, "b": 0.8}) == {"label": "b", "scores": {"a": 0.2, "b": 0.8}}
    # nothing to pair with: unchanged
    assert with_scores([1, 0, 1], [0.1, 0.9]) == [1, 0, 1]
    assert with_scores(["b"], None) == ["b"]
    assert with_scores(None, [0.5]) is None


def test_named_probabilities_need_no_class_order() -> None:
    (out,) = normalize(with_scores(["benign"], [{"malignant": 0.2, "benign": 0.8}]),
                       "classification")  # fmt: skip
    assert out is not None and out.cls == "benign" and out.classes == ("malignant", "benign")
    assert log_loss(out, "benign") == pytest.approx(-math.log(0.8))
    assert log_loss(out, "malignant") == pytest.approx(-math.log(0.2))
    assert log_loss(out, "unknown") is None
    # p1 is the probability of the second named class, and the AUC target follows it
    assert out.p1 == 0.8
    assert (binary_target(out, "benign"), binary_target(out, "malignant")) == (1, 0)
    assert binary_target(out, "other") is None


def test_index_classes_as_json_keys_match_numeric_labels() -> None:
    (out,) = normalize(with_scores([1], [{"0": 0.3, "1": 0.7}]), "classification")
    assert out is not None
    assert log_loss(out, 1) == pytest.approx(-math.log(0.7))
    assert log_loss(out, 0.0) == pytest.approx(-math.log(0.3))
    assert binary_target(out, True) == 1


def test_unnamed_rows_and_single_scores_still_work() -> None:
    (pair,) = examples(with_scores([1], [[0.25, 0.75]]), 1, "classification")
    out, label = pair
    assert out is not None and out.cls == 1
    assert log_loss(out, label) == pytest.approx(-math.log(0.75))
    (out,) = normalize(with_scores([1], [0.9]), "classification")
    assert out is not None and out.p1 == 0.9 and binary_target(out, 0) == 0


def test_the_engine_feeds_logged_scores_to_log_loss_auc_and_user_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the store: rows logged with scores (shadow pairs, named classes) and labels."""
    engine = open_engine(f"sqlite:///{tmp_path / 'coalmine.db'}")
    seen: list[Any] = []
    monkeypatch.setattr(user_metrics, "_allowed", dict(user_metrics._allowed))  # restored after

    def p_true(prediction: Any, label: Any, scores: Any) -> float:
        # a score-based metric takes a third argument: the instance's logged scores
        (row,) = scores
        return float(row[label])

    def correct(prediction: Any, label: Any) -> float:
        # a two-argument metric gets the prediction exactly as logged, as before scores
        seen.append(prediction)
        return float(prediction == [label])

    register_user_metric("p_true", p_true)
    register_user_metric("correct", correct)
    rng = np.random.default_rng(3)
    records, labels = [], {}
    for i in range(300):
        rid, y = f"r{i}", ["ham", "spam"][i % 2]
        labels[rid] = y
        for version, role, skill in (("v1", "stable", 0.8), ("v2", "shadow", 0.8)):
            p_spam = float(np.clip(rng.normal(0.5 + (skill - 0.5) * (1 if y == "spam" else -1),
                                              0.15), 0.01, 0.99))  # fmt: skip
            records.append(PredictionRecord(
                rid, "m", version, role, 1000.0 + i, 10.0, 200,
                prediction=["spam" if p_spam >= 0.5 else "ham"],
                scores=[{"ham": 1 - p_spam, "spam": p_spam}],
            ))  # fmt: skip
    insert_batch(engine, records)
    with engine.begin() as conn:
        conn.execute(insert(feedback), [
            {"request_id": rid, "label": json.dumps(y), "outcomes": None, "ts": 2000.0}
            for rid, y in labels.items()
        ])  # fmt: skip
    criteria = [
        Criterion(metric="log_loss", margin=0.2),
        Criterion(metric="auc", margin=0.1),
        Criterion(metric="user:p_true", margin=0.1),
        Criterion(metric="user:correct", margin=0.1),
    ]
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=criteria,
                   mode="shadow")  # fmt: skip
    results = {r.metric: r for r in ev.evaluate().results if r.slice is None}
    for metric in ("log_loss", "user:p_true", "user:correct"):
        assert results[metric].n_candidate == 300 and results[metric].n_baseline == 300, metric
    assert results["auc"].n_candidate > 0 and results["auc"].n_baseline > 0  # in AUC batches
    assert seen and all(p in (["ham"], ["spam"]) for p in seen)
    assert 0.5 < results["user:p_true"].candidate_value < 1.0

    # `coalmine export` then `coalmine analyze` reads the same scores
    path = tmp_path / "log.csv"
    write_export(iter_export(engine, "m"), path)
    engine.dispose()
    offline = analyze_export(path, model="m", candidate="v2", baseline="v1", criteria=criteria)
    again = {r.metric: r for r in offline.judge().results if r.slice is None}
    for metric in ("log_loss", "user:p_true", "user:correct"):
        assert again[metric].n_candidate == 300 and again[metric].n_baseline == 300, metric
        assert again[metric].estimate == pytest.approx(results[metric].estimate)
