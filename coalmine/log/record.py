"""What the gateway hands to the prediction log: one record per served or shadowed call.

Two kinds of record reach a `PredictionSink`:
- `PredictionRecord`: a row ready to store (prediction and scores decoded, input shaped).
  The collectors (batch ingest, KServe, Router, nginx log) and tests hand these over.
- `RawRecord`: a call as the gateway saw it, the upstream's answer still as bytes and,
  maybe, the request body still to be shaped. The log's writer (the writer process, or the
  writer thread's task) turns it into the same `PredictionRecord` the gateway used to build
  (`coalmine.log.answers.finish`): the decoding is off the request path.
"""

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


@dataclass(slots=True)
class RawRecord:
    """A gateway call whose answer the log's writer decodes (see the module doc).

    The answer is read as `parse_response(protocol, answer, status, header_length,
    scores_field)` would read it on the request path. An answer too large to ship to the
    writer is decoded by the gateway instead: `answer` is then None and `prediction` and
    `scores` hold what it read.
    """

    request_id: str
    model: str
    version: str
    role: str  # one of ROLES
    ts: float
    latency_ms: float
    status: int
    error_class: str | None
    protocol: str  # "v1" | "v2" | "plain": how to read the answer
    answer: bytes | None  # the upstream's body as it came; None: already decoded
    header_length: str | None  # its Inference-Header-Content-Length (V2 binary tensors)
    scores_field: str | None  # the model's configured scores field or output
    # str: shaped by the gateway; bytes: the request body, shaped by the writer's policy
    # (`InputPolicy.shape_input(bytes)`: the gateway defers only what gives the same text)
    input: str | bytes | None
    slices: dict[str, Any]
    canary_weight_bp: int
    rollout_id: int | None
    prediction: Any = None  # when `answer` is None
    scores: Any = None
    sample_weight: float = 1.0


LogRecord = PredictionRecord | RawRecord


class PredictionSink(Protocol):
    """Accepts records without blocking; drops (and counts) when its buffer is full."""

    def submit(self, record: LogRecord) -> bool:
        """Queue one record; False when it was dropped. Never blocks, never raises."""
        ...
