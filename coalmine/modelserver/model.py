"""A loaded scikit-learn estimator and the input checks every protocol shares.

Pure apart from `load_model`: the protocol modules turn requests into a 2-D float matrix
through `to_matrix`, which raises `InputError` with a reason a client can act on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

__all__ = ["InputError", "LoadedModel", "Prediction", "load_model", "to_jsonable"]


class InputError(ValueError):
    """A request the model cannot score; the message is returned to the client as a 400."""


@dataclass(frozen=True, slots=True)
class Prediction:
    labels: list[Any]
    probabilities: list[list[float]] | None  # one row per instance, columns = classes


def to_jsonable(values: np.ndarray) -> list[Any]:
    """numpy scalars → plain Python, so json.dumps accepts them."""
    result: list[Any] = values.tolist()
    return result


class LoadedModel:
    """An estimator with what we know of its inputs (count, names) and outputs (classes)."""

    def __init__(self, estimator: Any, name: str, version: str) -> None:
        if not hasattr(estimator, "predict"):
            raise TypeError(f"{type(estimator).__name__} has no predict(); not an estimator")
        self.estimator = estimator
        self.name = name
        self.version = version
        n = getattr(estimator, "n_features_in_", None)
        self.n_features: int | None = int(n) if n is not None else None
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names: list[str] | None = (
            [str(x) for x in names] if names is not None else None
        )
        classes = getattr(estimator, "classes_", None)
        self.classes: list[Any] | None = (
            to_jsonable(np.asarray(classes)) if classes is not None else None
        )
        self.has_proba = hasattr(estimator, "predict_proba") and self.classes is not None
        self.flip: Callable[[Prediction], Prediction] | None = None  # fault injection

    @property
    def task(self) -> str:
        return "classification" if self.classes is not None else "regression"

    def to_matrix(self, instances: Any) -> np.ndarray:
        """A list of rows (lists of numbers, or {feature: value} dicts) → float matrix."""
        if not isinstance(instances, list) or not instances:
            raise InputError("instances must be a non-empty list")
        rows = [self._row(i, inst) for i, inst in enumerate(instances)]
        return np.asarray(rows, dtype=np.float64)

    def _row(self, index: int, instance: Any) -> list[float]:
        if isinstance(instance, dict):
            if self.feature_names is None:
                raise InputError(
                    f"instance {index}: this model has no feature names; send a list of numbers"
                )
            missing = [f for f in self.feature_names if f not in instance]
            if missing:
                raise InputError(f"instance {index}: missing feature(s) {missing[:5]}")
            extra = [k for k in instance if k not in self.feature_names]
            if extra:
                raise InputError(f"instance {index}: unknown feature(s) {extra[:5]}")
            values = [instance[f] for f in self.feature_names]
        elif isinstance(instance, list):
            values = instance
        else:
            raise InputError(f"instance {index}: expected a list of numbers or an object")
        if self.n_features is not None and len(values) != self.n_features:
            raise InputError(
                f"instance {index}: expected {self.n_features} features, got {len(values)}"
            )
        out = []
        for j, value in enumerate(values):
            # bool is an int subclass; a JSON true is almost certainly a client bug here.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"instance {index}, feature {j}: {value!r} is not a number")
            if not math.isfinite(value):
                raise InputError(f"instance {index}, feature {j}: {value!r} is not finite")
            out.append(float(value))
        return out

    def predict(self, matrix: np.ndarray) -> Prediction:
        x = self._frame(matrix)
        labels = to_jsonable(np.asarray(self.estimator.predict(x)))
        probabilities = None
        if self.has_proba:
            probabilities = to_jsonable(np.round(np.asarray(self.estimator.predict_proba(x)), 6))
        result = Prediction(labels=labels, probabilities=probabilities)
        return self.flip(result) if self.flip is not None else result

    def _frame(self, matrix: np.ndarray) -> Any:
        """Models fitted on a DataFrame want one back (else sklearn warns on every call)."""
        if self.feature_names is None:
            return matrix
        try:
            import pandas as pd
        except ImportError:  # pandas is optional; without it, silence the name warning
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return matrix
        return pd.DataFrame(matrix, columns=self.feature_names)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "estimator": type(self.estimator).__name__,
            "task": self.task,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "classes": self.classes,
        }


def load_model(path: str | Path, name: str, version: str) -> LoadedModel:
    """Load a joblib file. joblib unpickles: only load files you trust."""
    return LoadedModel(joblib.load(path), name=name, version=version)
