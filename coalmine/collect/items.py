"""One reported call: its validated shape, and the prediction-log record it becomes (pure).

A reporter says what it knows of a call (request id, model, version, latency, status, the
answer); what Coalmine knows better comes from the model's live route: the rollout the
call belongs to, the canary weight at the time, and, when the reporter leaves it out, the
role (the version is the route's stable, canary or shadow).
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coalmine.config import NAME_PATTERN, ModelConfig, reads_json_body
from coalmine.log.policy import InputPolicy, JsonTooDeep, extract_slices, loads_bounded
from coalmine.log.record import ROLES, PredictionRecord
from coalmine.routing.state import RouteState

__all__ = [
    "MAX_HEADERS", "MAX_ITEMS", "MAX_SLICES", "IngestBatch", "IngestItem", "ItemError",
    "error_class_of", "from_request", "resolve_role", "to_record",
]  # fmt: skip

MAX_ITEMS = 1000  # items per batch: one transaction each, so a batch stays short
MAX_SLICES = 32
MAX_HEADERS = 32
MAX_FUTURE_S = 300.0  # a call stamped further ahead than this is a clock or unit mistake
Role = Literal["stable", "canary", "shadow", "baseline", "paired"]
ErrorClass = Literal["timeout", "connection", "http_5xx", "http_4xx"]
SliceValue = Annotated[str, Field(max_length=256)] | int | float | bool | None
HeaderName = Annotated[str, Field(min_length=1, max_length=128)]
HeaderValue = Annotated[str, Field(max_length=8192)]


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
    headers: dict[HeaderName, HeaderValue] | None = Field(
        default=None,
        max_length=MAX_HEADERS,
        description="request headers: the server reads the model's slices from them (and "
        "from `body`) as the gateway does; given `slices` win",
    )
    body: str | None = Field(
        default=None,
        description="the request body as sent (text, or base64 with body_encoding): read "
        "for the model's JSON slices and logged as the gateway logs inputs; not with `input`",
    )
    body_encoding: Literal["utf-8", "base64"] = "utf-8"

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

    @model_validator(mode="after")
    def _input_or_body(self) -> IngestItem:
        if self.input is not None and self.body is not None:
            raise ValueError("give input (already read) or body (as sent), not both")
        return self


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


def _raw_body(item: IngestItem, where: str) -> bytes | None:
    if item.body is None:
        return None
    if item.body_encoding == "utf-8":
        try:
            return item.body.encode()
        except UnicodeEncodeError:  # a lone surrogate: not text a request could carry
            raise ItemError(f"{where}.body", "not UTF-8 text: send it as base64") from None
    try:
        return base64.b64decode(item.body, validate=True)
    except binascii.Error:
        raise ItemError(f"{where}.body", "not base64 (body_encoding is base64)") from None


def from_request(
    item: IngestItem, model: ModelConfig | None, policy: InputPolicy, where: str
) -> tuple[dict[str, Any], str | None]:
    """The slices and shaped input of `item`, as the gateway reads them from a request.

    An item with `headers` or `body` gets the model's configured slices read from them
    (None where absent, as the gateway logs them), its given `slices` winning, and its body
    shaped by `policy` like the gateway's (a body that is not JSON, or too deep to walk,
    gives no JSON slices and is logged as the policy logs raw bytes). Otherwise its own
    slices and `input`, shaped by `policy` (ItemError when too deep)."""
    raw = _raw_body(item, where)
    if raw is None and item.headers is None:
        try:
            shaped = None if item.input is None else policy.shape_input(item.input)
        except JsonTooDeep as exc:
            raise ItemError(f"{where}.input", str(exc)) from None
        return dict(item.slices), shaped
    fields = tuple(model.slices) if model is not None else ()
    sticky = model.routing.sticky if model is not None else None
    # read as the gateway reads it: parsed only when a JSON slice or sticky key needs it
    # (then logged from the parsed value, which full mode re-encodes compactly)
    parsed: Any = None
    if raw is not None and reads_json_body(sticky, fields):
        try:
            parsed = loads_bounded(raw)
        except (ValueError, UnicodeDecodeError, JsonTooDeep):
            parsed = None  # the model judged the body; the gateway reads no slices from it
    try:
        shaped = None if raw is None else policy.shape_input(raw if parsed is None else parsed)
    except JsonTooDeep:
        shaped = None  # forwarded and answered already: the row is kept, without input
    return {**extract_slices(fields, item.headers or {}, parsed), **item.slices}, shaped


def to_record(
    item: IngestItem,
    route: RouteState,
    role: str,
    shaped_input: str | None,
    now: float,
    slices: dict[str, Any] | None = None,
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
        slices=dict(item.slices) if slices is None else slices,
        canary_weight_bp=route.canary_weight_bp,
        rollout_id=route.rollout_id,
        scores=item.scores,
    )
