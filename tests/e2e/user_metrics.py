"""A per-example user metric for the live tests; allow-listed in their config file."""

from typing import Any


def correct(prediction: Any, label: Any) -> float:
    """1 when the predicted class is the label (a user's own accuracy). With scores logged
    the prediction arrives as {"label": ..., "scores": ...}."""
    if isinstance(prediction, dict):
        prediction = prediction.get("label")
    if isinstance(prediction, list) and prediction:
        prediction = prediction[0]
    return 1.0 if prediction == label else 0.0
