"""The inference protocols the gateway forwards, and how to read a prediction from each.

KServe V1                   POST /v1/models/{name}:predict   prediction <- "predictions"
Open Inference Protocol V2  POST /v2/models/{name}[/versions/{v}]/infer
                                                             prediction <- "outputs"
Plain JSON                  POST /models/{name}/predict      prediction <- "prediction"(s)

Scores (class probabilities or a score per instance) are read beside the prediction: see
`coalmine.gateway.scores`.

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
from coalmine.gateway.scores import named_scores, scores_field, scores_tensor, tensor_scores

__all__ = [
    "MAX_LOGGED_TENSOR_BYTES", "PLAIN", "PROTOCOLS", "V1", "V2", "Protocol", "match_inference_path",
    "match_model_route",
    "parse_prediction", "parse_response",
]  # fmt: skip


# A raw output larger than this is not decoded for the log (an embedding, an image): its data
# is logged as null. Labels and probability rows of any sensible batch are far smaller.
MAX_LOGGED_TENSOR_BYTES = 1 << 20

Extracted = tuple[Any, Any]  # (prediction, scores), each None when absent


def _v1(obj: Any, field: str | None) -> Extracted:
    if not isinstance(obj, dict):
        return None, None
    return obj.get("predictions"), named_scores(scores_field(obj, field), obj.get("classes"))


def _v2(obj: Any, field: str | None) -> Extracted:
    outputs = obj.get("outputs") if isinstance(obj, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return None, None
    tensors = [o for o in outputs if isinstance(o, dict)]
    scores = scores_tensor(tensors, field)
    rest = [t for t in tensors if t is not scores]
    # The label tensor is what the analysis compares; a model server that also returns
    # probabilities names its label output "predict" (sklearn's method name).
    label = next((t for t in rest if t.get("name") == "predict"), None)
    if label is None and len(rest) == 1:
        label = rest[0]
    if label is not None:
        prediction = label.get("data")
    else:
        prediction = {str(t.get("name")): t.get("data") for t in rest} or None
    return prediction, None if scores is None else tensor_scores(scores)


def _plain(obj: Any, field: str | None) -> Extracted:
    if not isinstance(obj, dict):
        return None, None
    prediction = obj.get("prediction", obj.get("predictions"))
    return prediction, named_scores(scores_field(obj, field), obj.get("classes"))


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    # (response JSON, the model's configured scores field or None) -> (prediction, scores)
    extract: Callable[[Any, str | None], Extracted]


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


def parse_response(
    protocol: Protocol,
    body: bytes,
    status: int,
    header_length: str | None = None,
    scores: str | None = None,
) -> Extracted:
    """(prediction, scores) in an upstream response body; (None, None) for errors and
    unreadable bodies.

    `header_length` is the response's `Inference-Header-Content-Length`: the body is then
    a JSON header followed by raw tensors, decoded into the outputs' `data`. `scores` names
    the field or output holding the scores (None: found by its usual names).
    """
    if status >= 300 or not body:
        return None, None
    try:
        length = binary_header_length(header_length)
        if length is not None:
            obj: Any = decode_body(body, length, "outputs", MAX_LOGGED_TENSOR_BYTES)
        else:
            obj = json.loads(body.decode())  # str input skips json's encoding sniffing
    # BinaryTensorError is a ValueError; RecursionError: an answer nested beyond reading
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    return protocol.extract(obj, scores)


def parse_prediction(
    protocol: Protocol, body: bytes, status: int, header_length: str | None = None
) -> Any:
    """The prediction alone (see `parse_response`)."""
    return parse_response(protocol, body, status, header_length)[0]
