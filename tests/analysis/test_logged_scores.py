"""Logged scores reach log_loss and AUC: with class names or indices, one row or several."""

from __future__ import annotations

import math

import pytest

from coalmine.analysis.outputs import binary_target, examples, log_loss, normalize, with_scores


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
