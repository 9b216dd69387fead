"""The three request/response shapes the model server speaks, as pure functions.

KServe V1  `POST /v1/models/{name}:predict`
    request  `{"instances": [[f1, f2, ...] | {feature: value}, ...]}`  ("inputs" also accepted)
    response `{"predictions": [label, ...]}`, and for classifiers with predict_proba also
    `"probabilities": [[p_class0, p_class1, ...], ...]` with columns in the order of
    `"classes"` (repeated in the response and in `GET /v1/models/{name}`).
Open Inference Protocol V2  `POST /v2/models/{name}/infer`
    request  `{"id"?, "inputs": [{"name", "shape": [n, k], "datatype": "FP64", "data": [...]}]}`
    — one [n, k] tensor, or one [n] / [n, 1] tensor per feature (matched by name when the
    model knows its feature names, else taken in order).
    response `{"model_name", "model_version", "id", "outputs": [{"name": "predict", ...},
    {"name": "predict_proba", "shape": [n, n_classes], ...}]}`
Plain JSON  `POST /models/{name}/predict`
    request  `{"features": [f1, ...] | {feature: value} | [[...], ...]}`
    response `{"prediction": label, "probabilities": {class: p}}` for one row; lists of both
    for a list of rows.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from coalmine.modelserver.model import InputError, LoadedModel

__all__ = ["predict_plain", "predict_v1", "predict_v2"]

NUMERIC_DATATYPES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
    "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
}  # fmt: skip


def predict_v1(model: LoadedModel, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError("body must be a JSON object with an 'instances' list")
    instances = body.get("instances", body.get("inputs"))
    if instances is None:
        raise InputError("missing field 'instances'")
    result = model.predict(model.to_matrix(instances))
    out: dict[str, Any] = {"predictions": result.labels}
    if result.probabilities is not None:
        out["probabilities"] = result.probabilities
        out["classes"] = model.classes
    return out


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item))
        return flat
    return [data]


def _tensor(index: int, tensor: Any) -> tuple[str, list[int], list[Any]]:
    if not isinstance(tensor, dict):
        raise InputError(f"inputs[{index}] must be an object")
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise InputError(f"inputs[{index}]: missing field '{key}'")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"inputs[{index}].shape must be a list of non-negative integers")
    datatype = tensor["datatype"]
    if datatype not in NUMERIC_DATATYPES:
        raise InputError(f"inputs[{index}].datatype {datatype!r} is not numeric")
    data = _flatten(tensor["data"])
    if len(data) != math.prod(shape):
        raise InputError(
            f"inputs[{index}]: shape {shape} needs {math.prod(shape)} values, got {len(data)}"
        )
    if datatype == "BOOL":
        data = [float(bool(v)) if isinstance(v, bool) else v for v in data]
    return str(tensor["name"]), shape, data


def _v2_rows(model: LoadedModel, inputs: list[Any]) -> list[list[Any]]:
    tensors = [_tensor(i, t) for i, t in enumerate(inputs)]
    if len(tensors) == 1 and len(tensors[0][1]) in (1, 2):
        _, shape, data = tensors[0]
        if len(shape) == 1:  # a single instance given as [k]
            return [data]
        n, k = shape
        return [data[r * k : (r + 1) * k] for r in range(n)]
    # One column per feature.
    for i, (_, shape, _) in enumerate(tensors):
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"inputs[{i}]: one tensor per feature must have shape [n] or [n, 1]")
    lengths = {len(data) for _, _, data in tensors}
    if len(lengths) != 1:
        raise InputError(f"feature tensors have different lengths {sorted(lengths)}")
    names = [name for name, _, _ in tensors]
    if model.feature_names is not None:
        unknown = [n for n in names if n not in model.feature_names]
        if unknown:
            raise InputError(f"unknown feature tensor(s) {unknown[:5]}")
        missing = [f for f in model.feature_names if f not in names]
        if missing:
            raise InputError(f"missing feature tensor(s) {missing[:5]}")
        by_name = {name: data for name, _, data in tensors}
        columns = [by_name[f] for f in model.feature_names]
    else:
        columns = [data for _, _, data in tensors]
    return [list(row) for row in zip(*columns, strict=True)]


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def predict_v2(model: LoadedModel, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InputError("body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("'inputs' must be a non-empty list of tensors")
    rows = _v2_rows(model, inputs)
    result = model.predict(model.to_matrix(rows))
    n = len(result.labels)
    outputs: list[dict[str, Any]] = [
        {
            "name": "predict",
            "shape": [n],
            "datatype": _datatype(result.labels),
            "data": result.labels,
        }
    ]
    if result.probabilities is not None:
        classes = len(result.probabilities[0]) if n else 0
        outputs.append(
            {
                "name": "predict_proba",
                "shape": [n, classes],
                "datatype": "FP64",
                "data": [p for row in result.probabilities for p in row],
                "parameters": {"classes": model.classes},
            }
        )
    request_id = body.get("id")
    return {
        "model_name": model.name,
        "model_version": model.version,
        "id": str(request_id) if request_id is not None else str(uuid.uuid4()),
        "outputs": outputs,
    }


def predict_plain(model: LoadedModel, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "features" not in body:
        raise InputError("body must be a JSON object with a 'features' field")
    features = body["features"]
    batch = isinstance(features, list) and bool(features) and isinstance(features[0], list | dict)
    result = model.predict(model.to_matrix(features if batch else [features]))
    probabilities: list[dict[str, float]] | None = None
    if result.probabilities is not None and model.classes is not None:
        probabilities = [
            {str(c): p for c, p in zip(model.classes, row, strict=True)}
            for row in result.probabilities
        ]
    if batch:
        out: dict[str, Any] = {"prediction": result.labels}
        if probabilities is not None:
            out["probabilities"] = probabilities
        return out
    out = {"prediction": result.labels[0]}
    if probabilities is not None:
        out["probabilities"] = probabilities[0]
    return out
