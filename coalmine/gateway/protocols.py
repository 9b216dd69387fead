"""The inference protocols the gateway forwards, and how to read a prediction from each.

KServe V1                   POST /v1/models/{name}:predict   prediction <- "predictions"
Open Inference Protocol V2  POST /v2/models/{name}[/versions/{v}]/infer
                                                             prediction <- "outputs"
Plain JSON                  POST /models/{name}/predict      prediction <- "prediction"(s)

A V2 response in the binary tensor extension (`Inference-Header-Content-Length` bytes of
JSON, then raw tensors) is decoded before its prediction is read.

The protocols' GET routes (health, readiness, metadata) are passed through to the stable
version: `match_model_route` recognises them.

The upstream path is the request's path on the version's base URL, so a model server that
speaks the protocol needs no gateway-specific endpoint. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coalmine.binary_tensors import decode_body
from coalmine.binary_tensors import header_length as binary_header_length

__all__ = [
    "PLAIN", "PROTOCOLS", "V1", "V2", "Protocol", "match_inference_path", "match_model_route",
    "parse_prediction",
]  # fmt: skip


def _v1(obj: Any) -> Any:
    return obj.get("predictions") if isinstance(obj, dict) else None


def _v2(obj: Any) -> Any:
    outputs = obj.get("outputs") if isinstance(obj, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return None
    tensors = [o for o in outputs if isinstance(o, dict)]
    # The label tensor is what the analysis compares; a model server that also returns
    # probabilities names its label output "predict" (sklearn's method name).
    for tensor in tensors:
        if tensor.get("name") == "predict":
            return tensor.get("data")
    if len(tensors) == 1:
        return tensors[0].get("data")
    return {str(t.get("name")): t.get("data") for t in tensors}


def _plain(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return None
    return obj.get("prediction", obj.get("predictions"))


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    extract: Callable[[Any], Any]


V1 = Protocol("v1", _v1)
V2 = Protocol("v2", _v2)
PLAIN = Protocol("plain", _plain)
PROTOCOLS = (V1, V2, PLAIN)

# One regex for the three inference paths (a query string is allowed and forwarded); the
# group that matched says the protocol. Model names never need percent-encoding.
_INFERENCE_PATH = re.compile(
    r"/(?:v1/models/([^/:?]+):predict|v2/models/([^/?]+)(?:/versions/[^/?]+)?/infer"
    r"|models/([^/?]+)/predict)(?:\?.*)?"
)
# GET routes of the protocols that are not inference: server health (no model in the path;
# group 1) and one model's readiness and metadata (group 2 or 3)
_MODEL_ROUTE = re.compile(
    r"/(?:v2/health/(live|ready)|v2/models/([^/?]+)(?:/versions/[^/?]+)?(?:/ready)?"
    r"|v1/models/([^/:?]+))(?:\?.*)?"
)


def match_inference_path(raw_path: str) -> tuple[Protocol, str] | None:
    """(protocol, model name) for an inference path, None for any other path."""
    match = _INFERENCE_PATH.fullmatch(raw_path)
    if match is None:
        return None
    v1, v2, plain = match.groups()
    if v1 is not None:
        return V1, v1
    if v2 is not None:
        return V2, v2
    return PLAIN, plain


def match_model_route(raw_path: str) -> tuple[str, str | None] | None:
    """("health", None) for server health, ("model", name) for a model's readiness or
    metadata, None for any other path."""
    match = _MODEL_ROUTE.fullmatch(raw_path)
    if match is None:
        return None
    health, v2, v1 = match.groups()
    if health is not None:
        return "health", None
    return "model", v2 if v2 is not None else v1


def parse_prediction(
    protocol: Protocol, body: bytes, status: int, header_length: str | None = None
) -> Any:
    """The prediction in an upstream response body; None for errors and unreadable bodies.

    `header_length` is the response's `Inference-Header-Content-Length`: the body is then
    a JSON header followed by raw tensors, decoded into the outputs' `data`.
    """
    if status >= 300 or not body:
        return None
    try:
        length = binary_header_length(header_length)
        if length is not None:
            obj: Any = decode_body(body, length, "outputs")
        else:
            obj = json.loads(body.decode())  # str input skips json's encoding sniffing
    # BinaryTensorError is a ValueError; RecursionError: an answer nested beyond reading
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return protocol.extract(obj)
