"""Scores read beside the prediction, per protocol, by their usual names or as configured."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coalmine.binary_tensors import decode_body, encode_tensor
from coalmine.gateway.protocols import (
    MAX_LOGGED_TENSOR_BYTES,
    PLAIN,
    V1,
    V2,
    Protocol,
    parse_response,
)


def _parse(protocol: Protocol, obj: Any, field: str | None = None) -> tuple[Any, Any]:
    return parse_response(protocol, json.dumps(obj).encode(), 200, None, field)


def test_v1_probabilities_are_named_by_the_classes_field() -> None:
    body = {"predictions": ["b"], "probabilities": [[0.25, 0.75]], "classes": ["a", "b"]}
    assert _parse(V1, body) == (["b"], [{"a": 0.25, "b": 0.75}])
    # without classes the rows stay as they came (columns = class indices)
    assert _parse(V1, {"predictions": [1], "scores": [[0.25, 0.75]]}) == ([1], [[0.25, 0.75]])
    assert _parse(V1, {"predictions": [1]}) == ([1], None)


def test_a_configured_field_wins_over_the_usual_names() -> None:
    body = {"predictions": [1], "probabilities": [[0.5, 0.5]], "confidence": [0.9]}
    assert _parse(V1, body, "confidence") == ([1], [0.9])
    assert _parse(V1, body, "missing") == ([1], None)
    assert _parse(PLAIN, {"prediction": 1, "p": 0.8}, "p") == (1, 0.8)


def test_v2_scores_are_a_second_output_tensor() -> None:
    predict = {"name": "predict", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    proba = {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2],
             "data": [0.9, 0.1, 0.2, 0.8], "parameters": {"classes": ["a", "b"]}}  # fmt: skip
    assert _parse(V2, {"outputs": [proba, predict]}) == (
        ["a", "b"],
        [{"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.8}],
    )
    # two outputs under other names: the label first, the scores second
    label = {**predict, "name": "label"}
    other = {k: v for k, v in proba.items() if k != "parameters"} | {"name": "logits"}
    assert _parse(V2, {"outputs": [label, other]}) == (["a", "b"], [[0.9, 0.1], [0.2, 0.8]])
    # three outputs: only a configured (or usually named) one holds scores
    extra = {"name": "latency", "datatype": "FP32", "shape": [1], "data": [3.0]}
    prediction, scores = _parse(V2, {"outputs": [label, other, extra]}, "logits")
    assert scores == [[0.9, 0.1], [0.2, 0.8]]
    assert prediction == {"label": ["a", "b"], "latency": [3.0]}
    assert _parse(V2, {"outputs": [predict]}) == (["a", "b"], None)


def test_binary_v2_scores_are_decoded_too() -> None:
    labels, proba = encode_tensor("BYTES", ["b"]), encode_tensor("FP32", [0.25, 0.75])
    head = json.dumps({"outputs": [
        {"name": "predict", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(labels)}},
        {"name": "predict_proba", "datatype": "FP32", "shape": [1, 2],
         "parameters": {"binary_data_size": len(proba), "classes": ["a", "b"]}},
    ]}).encode()  # fmt: skip
    got = parse_response(V2, head + labels + proba, 200, str(len(head)))
    assert got == (["b"], [{"a": 0.25, "b": 0.75}])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prediction": "b", "probabilities": {"a": 0.3, "b": 0.7}}, ("b", {"a": 0.3, "b": 0.7})),
        ({"prediction": ["a"], "probabilities": [{"a": 0.6, "b": 0.4}]},
         (["a"], [{"a": 0.6, "b": 0.4}])),
        ({"prediction": 1, "score": 0.7}, (1, None)),
    ],
)  # fmt: skip
def test_plain_json_scores(body: dict[str, Any], expected: tuple[Any, Any]) -> None:
    assert _parse(PLAIN, body) == expected


def test_errors_and_unreadable_bodies_have_no_scores() -> None:
    assert parse_response(V1, b'{"predictions": [1], "probabilities": [[1, 0]]}', 500) == (
        None,
        None,
    )
    assert parse_response(V1, b"\xff", 200) == (None, None)


def test_a_large_raw_output_is_not_decoded_for_the_log() -> None:
    labels = encode_tensor("BYTES", ["a"])
    embedding = bytes(MAX_LOGGED_TENSOR_BYTES + 4)  # zeros: FP32 values, too many to log
    head = json.dumps({"outputs": [
        {"name": "predict", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(labels)}},
        {"name": "embedding", "datatype": "FP32", "shape": [1, len(embedding) // 4],
         "parameters": {"binary_data_size": len(embedding)}},
        {"name": "latency", "datatype": "FP32", "shape": [1], "data": [1.5]},
    ]}).encode()  # fmt: skip
    body = head + labels + embedding
    assert parse_response(V2, body, 200, str(len(head)), "embedding") == (["a"], None)
    outputs = decode_body(body, len(head), "outputs", MAX_LOGGED_TENSOR_BYTES)["outputs"]
    assert [o["data"] for o in outputs] == [["a"], None, [1.5]]
