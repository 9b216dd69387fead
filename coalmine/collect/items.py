"""One reported call: its validated shape, and the prediction-log record it becomes (pure).

A reporter says what it knows of a call (request id, model, version, latency, status, the
answer); what Coalmine knows better comes from the model's live route: the rollout the
call belongs to, the canary weight at the time, and, when the reporter leaves it out, the
role (the version is the route's stable, canary or shadow).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coalmine.config import NAME_PATTERN
from coalmine.log.record import ROLES, PredictionRecord
from coalmine.routing.state import RouteState

__all__ = [
    "MAX_ITEMS", "MAX_SLICES", "IngestBatch", "IngestItem", "ItemError", "error_class_of",
    "resolve_role", "to_record",
]  # fmt: skip

MAX_ITEMS = 1000  # items per batch: one transaction each, so a batch stays short
MAX_SLICES = 32
MAX_FUTURE_S = 300.0  # a call stamped further ahead than this is a clock or unit mistake
Role = Literal["stable", "canary", "shadow", "baseline", "paired"]
ErrorClass = Literal["timeout", "connection", "http_5xx", "http_4xx"]
SliceValue = Annotated[str, Field(max_length=256)] | int | float | bool | None


class ItemError(ValueError):
    """An item the live state refuses: `field` (e.g. "items.3.version") and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class IngestItem(BaseModel):
    """One call of one version, as the service that made it saw it."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="the id the label will be sent with (printable ASCII)",
    )
    model: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)
    role: Role | None = Field(
        default=None, description="None: from the live route (stable, canary or shadow)"
    )
    ts: float | None = Field(default=None, description="epoch seconds the call started; None: now")
    latency_ms: float = Field(ge=0)
    status: int = Field(default=200, ge=0, le=599, description="HTTP status; 0: no answer")
    error_class: ErrorClass | None = Field(default=None, description="None: from the status")
    prediction: Any = None
    scores: Any = None
    input: Any = Field(default=None, description="shaped by the server's logging policy")
    slices: dict[Annotated[str, Field(min_length=1, max_length=64)], SliceValue] = Field(
        default_factory=dict, max_length=MAX_SLICES
    )

    @field_validator("ts", "latency_ms")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("ts")
    @classmethod
    def _epoch_seconds(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= time.time() + MAX_FUTURE_S:
            raise ValueError("must be epoch seconds, not in the future (milliseconds given?)")
        return value


class IngestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[IngestItem] = Field(min_length=1, max_length=MAX_ITEMS)


def error_class_of(status: int) -> str | None:
    """The gateway's error class for an HTTP status (0: no answer arrived)."""
    if status == 0:
        return "connection"
    if status >= 500:
        return "http_5xx"
    if status >= 400:
        return "http_4xx"
    return None


def resolve_role(version: str, role: str | None, route: RouteState, where: str) -> str:
    """The role of a call of `version`: as given, or what the live route makes of it."""
    if role is not None:
        assert role in ROLES
        return role
    candidates = (("canary", route.canary), ("shadow", route.shadow), ("stable", route.stable))
    for name, version_of in candidates:
        if version == version_of:
            return name
    raise ItemError(
        f"{where}.role",
        f"version {version!r} is not the stable, canary or shadow of model {route.model!r} "
        "now: give the role",
    )


def to_record(
    item: IngestItem, route: RouteState, role: str, shaped_input: str | None, now: float
) -> PredictionRecord:
    """The prediction-log record of `item`, stamped with the route's rollout and weight."""
    return PredictionRecord(
        request_id=item.request_id,
        model=item.model,
        version=item.version,
        role=role,
        ts=item.ts if item.ts is not None else now,
        latency_ms=item.latency_ms,
        status=item.status,
        error_class=item.error_class or error_class_of(item.status),
        prediction=item.prediction,
        input=shaped_input,
        slices=dict(item.slices),
        canary_weight_bp=route.canary_weight_bp,
        rollout_id=route.rollout_id,
        scores=item.scores,
    )
