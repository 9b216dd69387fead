"""What the gateway hands to the prediction log: one record per served or shadowed call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ROLES = ("stable", "canary", "shadow", "baseline", "paired")


@dataclass(slots=True)
class PredictionRecord:
    request_id: str
    model: str
    version: str
    role: str  # one of ROLES
    ts: float  # epoch seconds when the call started
    latency_ms: float
    status: int  # upstream HTTP status; 0 when no response arrived
    error_class: str | None = None  # None | timeout | connection | http_5xx | http_4xx
    prediction: Any = None  # parsed prediction (JSON-able), None when unparseable
    input: str | None = None  # already shaped by the logging policy
    slices: dict[str, Any] = field(default_factory=dict)
    canary_weight_bp: int = 0
    rollout_id: int | None = None
    scores: Any = None  # the probabilities/scores beside the prediction (JSON-able), if any
    # how many calls this row stands for: 1/rate for a sampled stable row, else 1
    sample_weight: float = 1.0


class PredictionSink(Protocol):
    """Accepts records without blocking; drops (and counts) when its buffer is full."""

    def submit(self, record: PredictionRecord) -> bool:
        """Queue one record; False when it was dropped. Never blocks, never raises."""
        ...
