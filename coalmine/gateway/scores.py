"""Where a response keeps its scores (class probabilities, or one score per instance).

log_loss and AUC need the model's probabilities, which servers return beside the label:

KServe V1   a field beside "predictions": "probabilities", "scores", "probs", ... (one row per
            instance; columns in the order of a "classes" field when there is one)
V2          a second output tensor: one named "predict_proba", "probabilities", "scores", ...,
            or, with exactly two outputs, the one that is not the label; columns in the order
            of the tensor's `parameters.classes` when given
Plain JSON  a field beside "prediction": "probabilities" ({class: p} or a list), "scores", ...

A model's config may name the field or output instead (`models[].scores`). When the class
names are known, each row of probabilities is logged as {class: p}, so the analysis can find
a label's probability without knowing the class order. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SCORE_NAMES", "named_scores", "scores_field", "scores_tensor", "tensor_scores"]

SCORE_NAMES = ("probabilities", "predict_proba", "scores", "probs", "probability", "proba")


def scores_field(obj: dict[str, Any], field: str | None) -> Any:
    """The value of the scores field of a V1 or plain JSON response; None when absent."""
    if field is not None:
        return obj.get(field)
    for name in SCORE_NAMES:  # a loop, not next(genexpr): the log's writer reads every answer
        if name in obj:
            return obj[name]
    return None


def scores_tensor(tensors: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The V2 output holding the scores; None when there is none (or only one output)."""
    if name is not None:
        return next((t for t in tensors if t.get("name") == name), None)
    found = next((t for n in SCORE_NAMES for t in tensors if t.get("name") == n), None)
    if found is not None or len(tensors) != 2:
        return found
    # two outputs, neither named as scores: the one that is not the label
    first, second = tensors
    return first if second.get("name") == "predict" else second


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def tensor_scores(tensor: dict[str, Any]) -> Any:
    """A V2 scores tensor's data, one row per instance for a [n, k] shape."""
    data = tensor.get("data")
    shape = tensor.get("shape")
    if (
        isinstance(data, list)
        and isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(d, int) and d > 0 for d in shape)
        and len(data) == shape[0] * shape[1]
    ):
        k = shape[1]
        data = [data[i : i + k] for i in range(0, len(data), k)]
    parameters = tensor.get("parameters")
    classes = parameters.get("classes") if isinstance(parameters, dict) else None
    return named_scores(data, classes)


def _row(values: Any, classes: list[Any]) -> Any:
    if (
        isinstance(values, list)
        and len(values) == len(classes)
        and all(_is_number(v) for v in values)
    ):
        return {str(c): v for c, v in zip(classes, values, strict=True)}
    return values


def named_scores(scores: Any, classes: Any) -> Any:
    """Rows of probabilities as {class: p} when the class names are given; else unchanged."""
    if scores is None or not isinstance(classes, list) or len(classes) < 2:
        return scores
    if isinstance(scores, list) and scores and all(isinstance(r, list) for r in scores):
        return [_row(r, classes) for r in scores]
    return _row(scores, classes)
