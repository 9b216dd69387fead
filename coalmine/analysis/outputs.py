"""Reading a logged prediction and a label into numbers a metric can use (pure).

Servers answer in many shapes; this module accepts the common ones:

- a class label (string, int, bool) — classification;
- a probability vector (list of ≥ 2 numbers summing to about 1) — the class is its argmax
  index, so labels must then be class indices (or names, when `classes` is given);
- a single number — regression value; for classification a number in [0, 1] that is not
  an int is the probability of class 1 (binary), the class is `p ≥ 0.5`;
- a mapping with `label`/`class`/`prediction`/`value` and/or
  `probabilities`/`probs`/`scores`; probabilities may be a list (in class order) or a
  mapping {class: p}, which needs no class order (the gateway logs them so when the server
  names its classes);
- KServe V1 `{"predictions": [x]}` and V2 `{"outputs": [{"data": [...]}]}` wrappers, and any
  one-element list around the above.

One request is one example. A V1 `predictions` list with one instance is unwrapped; a
request carrying several instances is scored only when its label is a list of the same
length, as that many examples; otherwise it is counted as unscorable and skipped, never
guessed at.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coalmine.analysis.inputs import plain

__all__ = [
    "Output", "binary_target", "comparable", "examples", "log_loss", "normalize", "with_scores",
]  # fmt: skip

EPS = 1e-6  # log loss is clipped to [EPS, 1 − EPS] so one confident miss cannot dominate
LOG_LOSS_CAP = -math.log(EPS)

_LABEL_KEYS = ("label", "class", "prediction", "value", "output", "y")
_PROB_KEYS = ("probabilities", "probs", "probability", "scores", "proba")


@dataclass(frozen=True, slots=True)
class Output:
    """One example's prediction: a class (classification), a value, and maybe probabilities."""

    cls: Any = None
    value: float | None = None
    probs: tuple[float, ...] | None = None
    p1: float | None = None  # binary: probability of class 1 (of classes[1] when named)
    classes: tuple[str, ...] | None = None  # the names of probs' columns, when known


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _unwrap(pred: Any) -> list[Any]:
    """The instances inside a prediction (usually one)."""
    if isinstance(pred, dict):
        if "predictions" in pred and isinstance(pred["predictions"], list):
            return list(pred["predictions"])
        outputs = pred.get("outputs")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            data = outputs[0].get("data")
            if isinstance(data, list):
                shape = outputs[0].get("shape")
                if isinstance(shape, list) and len(shape) == 2 and shape[0] >= 1:
                    width = int(shape[1])
                    return [data[i : i + width] for i in range(0, len(data), width)]
                return [data] if len(data) > 1 and all(map(_is_number, data)) else list(data)
    if isinstance(pred, list) and len(pred) == 1:
        return _unwrap(pred[0]) if isinstance(pred[0], list | dict) else [pred[0]]
    return [pred]


def _class_map(x: dict[Any, Any], task: str) -> Output | None:
    """{class: probability} (two or more classes) as an Output; None for anything else."""
    values = [plain(v) for v in x.values()]
    if task != "classification" or len(x) < 2 or not all(_is_number(v) for v in values):
        return None
    classes = tuple(str(k) for k in x)
    probs = tuple(float(v) for v in values)
    best = max(range(len(probs)), key=probs.__getitem__)
    p1 = probs[1] if len(probs) == 2 else None
    return Output(cls=classes[best], probs=probs, p1=p1, classes=classes)


def _one(x: Any, task: str) -> Output | None:
    x = plain(x)  # numpy int64/float64/bool_ are the numbers they hold
    if x is None:
        return None
    if isinstance(x, dict):
        probs = next((x[k] for k in _PROB_KEYS if k in x), None)
        label = next((x[k] for k in _LABEL_KEYS if k in x), None)
        if probs is None and label is None:
            return _class_map(x, task)
        base = _one(probs, task) if probs is not None else None
        if label is not None:
            got = _one(label, task)
            if got is None:
                return base
            if base is not None and task == "classification":
                return Output(cls=got.cls, value=got.value, probs=base.probs, p1=base.p1,
                              classes=base.classes)  # fmt: skip
            return got
        return base
    if isinstance(x, list):
        if len(x) == 1:
            return _one(x[0], task)
        if len(x) >= 2 and all(_is_number(v) for v in x):
            if task == "regression":
                return None
            probs = tuple(float(v) for v in x)
            best = max(range(len(probs)), key=probs.__getitem__)
            p1 = probs[1] if len(probs) == 2 else None
            return Output(cls=best, probs=probs, p1=p1)
        return None
    if isinstance(x, bool):
        return Output(cls=int(x), value=float(x))
    if _is_number(x):
        value = float(x)
        if task == "classification" and isinstance(x, float) and 0.0 <= value <= 1.0:
            return Output(cls=int(value >= 0.5), value=value, p1=value)
        return Output(cls=x if isinstance(x, int) else value, value=value)
    if isinstance(x, str):
        try:
            return Output(cls=x, value=float(x))
        except ValueError:
            return Output(cls=x)
    return None


def normalize(pred: Any, task: str) -> list[Output | None]:
    """Every instance in a logged prediction, each an Output or None when unreadable."""
    return [_one(x, task) for x in _unwrap(pred)]


def _label_index(label: Any, classes: Sequence[Any] | None) -> int | None:
    label = plain(label)
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, int):
        return label
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if classes is not None:
        try:
            return list(classes).index(label)
        except ValueError:
            return None
    if isinstance(label, str) and label.isascii() and label.lstrip("-").isdigit():
        return int(label)
    return None


def same_class(a: Any, b: Any, classes: Sequence[Any] | None = None) -> bool:
    """Class equality across representations (1 == "1" == classes[1] == "cat")."""
    if a == b:
        return True
    ia, ib = _label_index(a, classes), _label_index(b, classes)
    if ia is not None and ib is not None:
        return ia == ib
    return str(a) == str(b)


def comparable(a: Any, b: Any, classes: Sequence[Any] | None = None) -> bool:
    """Whether two classes can be compared: both indices, or both names.

    An index (0, 1, True, "1") and a name ("yes") never match unless `classes` maps indices
    to names (then "yes" is the index of "yes" in `classes`); comparing them as strings would
    score every example wrong, in both versions, without a word.
    """
    return (_label_index(a, classes) is None) == (_label_index(b, classes) is None)


def _named_index(label: Any, names: tuple[str, ...]) -> int | None:
    """The column of `label` among class names as logged (JSON object keys are text)."""
    for key in (str(label), str(_label_index(label, None))):
        if key in names:
            return names.index(key)
    return None


def binary_target(out: Output, label: Any, classes: Sequence[Any] | None = None) -> int | None:
    """1 when `label` is the class `out.p1` is the probability of, 0 for the other class,
    None otherwise (not binary, or an unknown label)."""
    if out.p1 is None:
        return None
    if out.classes is not None:
        idx = _named_index(label, out.classes)
        return idx if idx in (0, 1) else None
    if same_class(label, 1, classes):
        return 1
    if same_class(label, 0, classes):
        return 0
    return None


def log_loss(out: Output, label: Any, classes: Sequence[Any] | None = None) -> float | None:
    """Clipped log loss of one example; None when the prediction has no probabilities."""
    idx = _named_index(label, out.classes) if out.classes else _label_index(label, classes)
    if out.probs is not None:
        if idx is None or not 0 <= idx < len(out.probs):
            return None
        p = out.probs[idx]
    elif out.p1 is not None:
        if idx not in (0, 1):
            return None
        p = out.p1 if idx == 1 else 1.0 - out.p1
    else:
        return None
    p = min(max(p, EPS), 1.0 - EPS)
    return -math.log(p)


def score(out: Output | None, task: str) -> float | None:
    """The number a ranking metric (AUC) or drift bin uses: P(class 1) or the value."""
    if out is None:
        return None
    return out.p1 if task == "classification" else out.value


def examples(pred: Any, label: Any, task: str) -> list[tuple[Output | None, Any]]:
    """Pair the instances of one request with its label(s); [] when they cannot be paired."""
    outs = normalize(pred, task)
    if len(outs) == 1:
        if isinstance(label, list) and len(label) == 1:
            label = label[0]
        return [(outs[0], label)]
    if isinstance(label, list) and len(label) == len(outs):
        return list(zip(outs, label, strict=True))
    return []


def with_scores(prediction: Any, scores: Any) -> Any:
    """The logged prediction with the logged scores beside each instance's label.

    Each instance becomes {"label": label, "scores": its scores}, which `normalize` reads as
    a class with probabilities. Instances and score rows are paired by position; when they
    cannot be (different counts), the prediction is returned unchanged.
    """
    if scores is None or prediction is None or isinstance(prediction, dict):
        return prediction
    if not isinstance(prediction, list):
        return {"label": prediction, "scores": scores}
    if isinstance(scores, list) and len(scores) == len(prediction):
        return [{"label": p, "scores": s} for p, s in zip(prediction, scores, strict=True)]
    if len(prediction) == 1:  # one instance, its scores not wrapped in a list of rows
        return [{"label": prediction[0], "scores": scores}]
    return prediction
