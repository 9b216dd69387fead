"""The request/response shapes, on in-process models (no server): fast and exhaustive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coalmine.modelserver import InputError, LoadedModel, load_model
from coalmine.modelserver.protocols import predict_plain, predict_v1, predict_v2

ROW = [5.1, 3.5, 1.4, 0.2]  # an iris setosa


@pytest.fixture(scope="module")
def iris(model_files: dict[str, Path]) -> LoadedModel:
    return load_model(model_files["iris"], "iris", "v1")


@pytest.fixture(scope="module")
def named(model_files: dict[str, Path]) -> LoadedModel:
    if "named" not in model_files:
        pytest.skip("pandas not installed")
    return load_model(model_files["named"], "named", "v1")


@pytest.fixture(scope="module")
def reg(model_files: dict[str, Path]) -> LoadedModel:
    return load_model(model_files["reg"], "reg", "v1")


def test_v1_classifier_returns_labels_and_probabilities(iris: LoadedModel) -> None:
    out = predict_v1(iris, {"instances": [ROW, [6.7, 3.0, 5.2, 2.3]]})
    assert out["predictions"] == [0, 2]
    assert out["classes"] == [0, 1, 2]
    assert len(out["probabilities"]) == 2
    for row in out["probabilities"]:
        assert len(row) == 3 and sum(row) == pytest.approx(1.0, abs=1e-5)
    assert out["probabilities"][0][0] > 0.9


def test_v1_regressor_has_no_probabilities(reg: LoadedModel) -> None:
    out = predict_v1(reg, {"instances": [ROW[:3]]})
    assert set(out) == {"predictions"}
    assert isinstance(out["predictions"][0], float)


def test_dict_instances_map_to_feature_names(named: LoadedModel) -> None:
    as_dict = {"pw": 0.2, "pl": 1.4, "sw": 3.5, "sl": 5.1}  # any key order
    assert predict_v1(named, {"instances": [as_dict]}) == predict_v1(named, {"instances": [ROW]})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"instances": [[1.0, 2.0]]}, "expected 4 features, got 2"),
        ({"instances": [[1.0, "x", 3.0, 4.0]]}, "feature 1: 'x' is not a number"),
        ({"instances": [[1.0, True, 3.0, 4.0]]}, "is not a number"),
        ({"instances": []}, "non-empty list"),
        ({"instances": "nope"}, "non-empty list"),
        ({"rows": [ROW]}, "missing field 'instances'"),
        ([ROW], "JSON object"),
        ({"instances": [{"a": 1}]}, "no feature names"),
        ({"instances": [7]}, "expected a list of numbers or an object"),
    ],
)
def test_v1_bad_inputs_name_the_reason(iris: LoadedModel, body: Any, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        predict_v1(iris, body)


def test_dict_instances_report_missing_and_unknown_features(named: LoadedModel) -> None:
    with pytest.raises(InputError, match=r"missing feature\(s\) \['pw'\]"):
        predict_v1(named, {"instances": [{"sl": 1, "sw": 1, "pl": 1}]})
    with pytest.raises(InputError, match=r"unknown feature\(s\) \['zz'\]"):
        predict_v1(named, {"instances": [{"sl": 1, "sw": 1, "pl": 1, "pw": 1, "zz": 1}]})


def test_v2_one_matrix_tensor(iris: LoadedModel) -> None:
    body = {
        "id": "abc",
        "inputs": [
            {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [*ROW, 6.7, 3.0, 5.2, 2.3]}
        ],
    }
    out = predict_v2(iris, body)
    assert out["model_name"] == "iris" and out["model_version"] == "v1" and out["id"] == "abc"
    predict, proba = out["outputs"]
    assert predict == {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    assert proba["name"] == "predict_proba" and proba["shape"] == [2, 3]
    assert len(proba["data"]) == 6 and proba["parameters"]["classes"] == [0, 1, 2]


def test_v2_nested_data_and_generated_id(iris: LoadedModel) -> None:
    out = predict_v2(
        iris, {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [ROW]}]}
    )
    assert out["outputs"][0]["data"] == [0]
    assert len(out["id"]) == 36


def test_v2_one_tensor_per_feature_by_name(named: LoadedModel) -> None:
    inputs = [
        {"name": n, "shape": [1], "datatype": "FP64", "data": [v]}
        for n, v in reversed(list(zip(["sl", "sw", "pl", "pw"], ROW, strict=True)))
    ]
    assert predict_v2(named, {"inputs": inputs})["outputs"][0]["data"] == [0]


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        (
            [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}],
            "needs 4 values, got 3",
        ),
        ([{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}], "not numeric"),
        ([{"name": "x", "shape": [1, 4], "data": ROW}], "missing field 'datatype'"),
        (
            [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}],
            "expected 4 features",
        ),
        ([{"name": "x", "shape": "1x4", "datatype": "FP64", "data": ROW}], "shape must be"),
        ([], "non-empty list"),
    ],
)
def test_v2_bad_inputs_name_the_reason(iris: LoadedModel, inputs: Any, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        predict_v2(iris, {"inputs": inputs})


def test_plain_single_and_batch(iris: LoadedModel) -> None:
    single = predict_plain(iris, {"features": ROW})
    assert single["prediction"] == 0
    assert set(single["probabilities"]) == {"0", "1", "2"}
    batch = predict_plain(iris, {"features": [ROW, ROW]})
    assert batch["prediction"] == [0, 0] and len(batch["probabilities"]) == 2
    with pytest.raises(InputError, match="'features'"):
        predict_plain(iris, {"instances": [ROW]})
