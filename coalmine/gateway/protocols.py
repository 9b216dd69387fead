"""The inference protocols the gateway forwards, and how to read a prediction from each.

KServe V1                   POST /v1/models/{name}:predict   prediction <- "predictions"
Open Inference Protocol V2  POST /v2/models/{name}/infer     prediction <- "outputs"
Plain JSON                  POST /models/{name}/predict      prediction <- "prediction"(s)

The upstream path is the request's path on the version's base URL, so a model server that
speaks the protocol needs no gateway-specific endpoint. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PLAIN", "PROTOCOLS", "V1", "V2", "Protocol", "match_inference_path", "parse_prediction"]


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
    r"/(?:v1/models/([^/:?]+):predict|v2/models/([^/?]+)/infer|models/([^/?]+)/predict)(?:\?.*)?"
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


def parse_prediction(protocol: Protocol, body: bytes, status: int) -> Any:
    """The prediction in an upstream response body; None for errors and non-JSON bodies."""
    if status >= 300 or not body:
        return None
    try:
        obj = json.loads(body.decode())  # str input skips json's encoding sniffing
    except (ValueError, UnicodeDecodeError):
        return None
    return protocol.extract(obj)
