"""V2 requests and responses with the binary tensor extension, as Triton and KServe serve them.

Request: a body with an `Inference-Header-Content-Length` header is a JSON header plus raw
input tensors (`coalmine.binary_tensors`). Response: the request's `outputs` (name and
`parameters.binary_data`) choose which outputs are returned and which of them raw;
`parameters.binary_data_output: true` asks for every output raw. With any raw output the
response is the JSON header plus the raw blocks, `Content-Type: application/octet-stream`
and `Inference-Header-Content-Length` (Triton's framing). Pure functions.
"""

from __future__ import annotations

import json
from typing import Any

from coalmine.binary_tensors import (
    HEADER_LENGTH,
    BinaryTensorError,
    decode_body,
    encode_tensor,
    header_length,
)
from coalmine.modelserver.model import InputError

__all__ = ["read_v2_request", "write_v2_response"]


def read_v2_request(body: bytes, length_header: str | None) -> Any:
    """The request as JSON, raw input tensors decoded into `data`.

    Raises ValueError (invalid JSON) or BinaryTensorError (bad framing).
    """
    length = header_length(length_header)
    if length is None:
        return json.loads(body)
    return decode_body(body, length, "inputs")


def _flag(parameters: Any, name: str, where: str) -> bool | None:
    if not isinstance(parameters, dict) or name not in parameters:
        return None
    value = parameters[name]
    if not isinstance(value, bool):
        raise InputError(f"{where}.parameters.{name} must be true or false")
    return value


def _requested(
    request: dict[str, Any], response: dict[str, Any]
) -> list[tuple[dict[str, Any], bool]]:
    """(output, raw?) for each output to return, in the order asked for."""
    default = bool(_flag(request.get("parameters"), "binary_data_output", "request"))
    outputs = response["outputs"]
    asked = request.get("outputs")
    if asked is None:
        return [(o, default) for o in outputs]
    if not isinstance(asked, list):
        raise InputError("'outputs' must be a list of {name, parameters} objects")
    by_name = {o["name"]: o for o in outputs}
    chosen = []
    for i, want in enumerate(asked):
        name = want.get("name") if isinstance(want, dict) else None
        if name not in by_name:
            raise InputError(
                f"outputs[{i}]: unknown output {name!r}; this model has {sorted(by_name)}"
            )
        parameters = want.get("parameters")
        if isinstance(parameters, dict) and parameters.get("classification"):
            raise InputError(f"outputs[{i}]: the classification extension is not supported")
        raw = _flag(parameters, "binary_data", f"outputs[{i}]")
        chosen.append((by_name[name], default if raw is None else raw))
    return chosen


def write_v2_response(
    request: dict[str, Any], response: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers, with the outputs and encodings the request asked."""
    header = dict(response)
    header["outputs"] = []
    blocks: list[bytes] = []
    for output, raw in _requested(request, response):
        if not raw:
            header["outputs"].append(output)
            continue
        try:
            block = encode_tensor(output["datatype"], output["data"])
        except BinaryTensorError as exc:  # a label that does not fit its datatype: a bug here
            raise ValueError(f"output {output['name']!r}: {exc}") from exc
        meta = {k: v for k, v in output.items() if k != "data"}
        meta["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(block)}
        header["outputs"].append(meta)
        blocks.append(block)
    head = json.dumps(header, separators=(",", ":")).encode()
    if not blocks:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *blocks]), headers
