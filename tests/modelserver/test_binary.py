"""serve-model's V2 framing: requested outputs, binary_data per output, binary inputs."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from coalmine.binary_tensors import decode_body
from coalmine.modelserver.binary import read_v2_request, write_v2_response
from coalmine.modelserver.model import InputError

RESPONSE: dict[str, Any] = {
    "model_name": "iris",
    "outputs": [
        {"name": "predict", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2],
         "data": [0.9, 0.1, 0.2, 0.8], "parameters": {"classes": ["a", "b"]}},
    ],
}  # fmt: skip


def test_plain_json_unless_binary_is_asked_for() -> None:
    body, headers = write_v2_response({"inputs": []}, RESPONSE)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == RESPONSE


def test_binary_data_output_makes_every_output_raw() -> None:
    body, headers = write_v2_response({"parameters": {"binary_data_output": True}}, RESPONSE)
    assert headers["Content-Type"] == "application/octet-stream"
    n = int(headers["Inference-Header-Content-Length"])
    head = json.loads(body[:n])
    assert all("data" not in o for o in head["outputs"])
    assert head["outputs"][1]["parameters"] == {"classes": ["a", "b"], "binary_data_size": 32}
    decoded = decode_body(body, n, "outputs")
    assert [o["data"] for o in decoded["outputs"]] == [["a", "b"], [0.9, 0.1, 0.2, 0.8]]


def test_requested_outputs_choose_which_and_how() -> None:
    request = {"outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}},
                           {"name": "predict"}]}  # fmt: skip
    body, headers = write_v2_response(request, RESPONSE)
    n = int(headers["Inference-Header-Content-Length"])
    outputs = json.loads(body[:n])["outputs"]
    assert [o["name"] for o in outputs] == ["predict_proba", "predict"]
    assert outputs[1]["data"] == ["a", "b"] and "data" not in outputs[0]
    assert body[n:] == struct.pack("<4d", 0.9, 0.1, 0.2, 0.8)


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        ({"outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
        ({"outputs": "predict"}, "'outputs' must be a list"),
        ({"outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}]},
         "binary_data must be true or false"),
        ({"outputs": [{"name": "predict", "parameters": {"classification": 2}}]},
         "classification extension"),
    ],
)  # fmt: skip
def test_bad_output_requests_are_input_errors(request_body: dict[str, Any], reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        write_v2_response(request_body, RESPONSE)


def test_binary_inputs_are_read_into_data() -> None:
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2],
                                   "parameters": {"binary_data_size": 16}}]}).encode()  # fmt: skip
    request = read_v2_request(head + struct.pack("<2d", 1.5, 2.5), str(len(head)))
    assert request["inputs"][0]["data"] == [1.5, 2.5]
    assert read_v2_request(b'{"inputs": []}', None) == {"inputs": []}
