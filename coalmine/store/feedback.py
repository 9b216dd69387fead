"""Ground truth and business outcomes, joined to every logged prediction of a request.

Feedback may arrive hours after the prediction and out of order. Every item is kept (an
append-only table); a join folds a request's items in id order: the label is the latest
non-null label, outcomes merge with later values overriding earlier ones. So a correction
sent later wins, and a label and an outcome sent separately both count.

The live judgement folds the same items differently (`first_values`): each field — the
label, each named outcome — is counted once, with its first value, when that value arrives.
Its statistics only grow, as the anytime-valid tests need (see analysis/engine.py).

An item whose request id has no logged prediction is rejected with a per-item error
("unknown request_id") and not stored. The gateway writes its log in batches (every
`logging.flush_interval_s`), so feedback sent within that interval of the prediction may not
find it yet: the gateway's `POST /v1/feedback` re-checks such items once after two flush
intervals before reporting them unknown (log/feedback_http.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Connection, Engine, exists, insert, select

from coalmine.store.predictions import serialize_writers_in
from coalmine.store.schema import feedback, predictions

__all__ = [
    "UNKNOWN_REQUEST_ID",
    "FeedbackItem",
    "FeedbackStore",
    "FirstValues",
    "ItemResult",
    "JoinedRow",
    "first_values",
    "fold_feedback",
    "joined",
]

UNKNOWN_REQUEST_ID = "unknown request_id"
FEEDBACK_LOCK_KEY = 0x66656564  # "feed": feedback writers commit in id order (PostgreSQL)
_CHUNK = 500  # ids per IN (...) list: far below every backend's parameter limit

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class FeedbackItem(BaseModel):
    """One piece of feedback: a label, named outcomes, or both, for one request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    label: Any = None
    outcomes: dict[str, FiniteFloat] | None = None

    @model_validator(mode="after")
    def _has_something(self) -> FeedbackItem:
        if self.label is None and not self.outcomes:
            raise ValueError("give a label, outcomes, or both")
        return self


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The fate of one submitted item, in submission order."""

    index: int
    request_id: str | None
    feedback_id: int | None = None  # set when stored
    error: str | None = None  # set when rejected

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "request_id": self.request_id}
        if self.ok:
            out.update(status="stored", feedback_id=self.feedback_id)
        else:
            out.update(status="error", error=self.error)
        return out


def _validate(index: int, raw: Any) -> FeedbackItem | ItemResult:
    if isinstance(raw, FeedbackItem):
        return raw
    if not isinstance(raw, dict):
        return ItemResult(index, None, error="item must be a JSON object")
    request_id = raw.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    try:
        return FeedbackItem.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
        )
        return ItemResult(index, request_id, error=reasons)


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _known_request_ids(conn: Connection, request_ids: Iterable[str]) -> set[str]:
    known: set[str] = set()
    for chunk in _chunks(sorted(set(request_ids))):
        stmt = select(predictions.c.request_id).where(predictions.c.request_id.in_(chunk))
        known.update(conn.execute(stmt.distinct()).scalars())
    return known


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class FeedbackStore:
    """Validates and stores feedback items; one transaction per `add()` call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, items: Sequence[Any]) -> list[ItemResult]:
        """Store every valid item with a known request id; one result per item, in order.

        Items are dicts (parsed JSON) or FeedbackItem. A malformed item or an unknown
        request id is a per-item error; the other items are still stored.
        """
        checked = [_validate(i, raw) for i, raw in enumerate(items)]
        valid = {i: c for i, c in enumerate(checked) if isinstance(c, FeedbackItem)}
        results: dict[int, ItemResult] = {
            i: c for i, c in enumerate(checked) if isinstance(c, ItemResult)
        }
        now = time.time()
        with self.engine.begin() as conn:
            # feedback is paged by id too: the same commit-in-id-order rule as the log
            serialize_writers_in(conn, FEEDBACK_LOCK_KEY)
            known = _known_request_ids(conn, (v.request_id for v in valid.values()))
            for i, item in valid.items():
                if item.request_id not in known:
                    results[i] = ItemResult(i, item.request_id, error=UNKNOWN_REQUEST_ID)
                    continue
                row = {
                    "request_id": item.request_id,
                    "label": None if item.label is None else _dumps(item.label),
                    "outcomes": None if not item.outcomes else _dumps(item.outcomes),
                    "ts": now,
                }
                key = conn.execute(insert(feedback).values(**row)).inserted_primary_key
                assert key is not None  # an INSERT always has one
                results[i] = ItemResult(i, item.request_id, feedback_id=int(key[0]))
        return [results[i] for i in range(len(items))]


@dataclass(slots=True)
class Folded:
    """A request's feedback folded in id order."""

    label: Any = None
    outcomes: dict[str, float] = field(default_factory=dict)
    feedback_id: int = 0  # the latest item's id: the cursor for incremental readers
    ts: float = 0.0  # when the latest item arrived


def fold_feedback(rows: Iterable[Any]) -> dict[str, Folded]:
    """request_id -> folded feedback; `rows` have request_id, label, outcomes, id, ts."""
    out: dict[str, Folded] = {}
    for row in sorted(rows, key=lambda r: r.id):
        folded = out.setdefault(row.request_id, Folded())
        if row.label is not None:
            folded.label = json.loads(row.label)
        if row.outcomes is not None:
            folded.outcomes.update(json.loads(row.outcomes))
        folded.feedback_id, folded.ts = row.id, row.ts
    return out


@dataclass(slots=True)
class FirstValues:
    """A request's feedback as the live judgement counts it: each field's first value,
    with the id of the item that brought it (so a reader knows when it arrived)."""

    label: Any = None
    label_id: int | None = None
    outcomes: dict[str, tuple[int, float]] = field(default_factory=dict)

    def since(self, after: int) -> tuple[Any, bool, dict[str, float]]:
        """(label, has_label, outcomes) of the fields whose first value came after `after`."""
        new_label = self.label_id is not None and self.label_id > after
        outcomes = {k: v for k, (i, v) in self.outcomes.items() if i > after}
        return (self.label if new_label else None), new_label, outcomes

    def first_id_after(self, after: int) -> int | None:
        """The id of the first item after `after` that brought a field's first value."""
        ids = [i for i, _ in self.outcomes.values()] + [self.label_id or 0]
        new = [i for i in ids if i > after]
        return min(new) if new else None


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None  # only a hand-written row can hold bad JSON: it brings nothing


def first_values(rows: Iterable[Any]) -> dict[str, FirstValues]:
    """request_id -> first value of each field; `rows` have id, request_id, label, outcomes.

    A null label, or an outcome that is not a finite number, is no value (a later item may
    still bring one)."""
    out: dict[str, FirstValues] = {}
    for row in sorted(rows, key=lambda r: r.id):
        first = out.setdefault(row.request_id, FirstValues())
        if first.label_id is None:
            label = _json_or_none(row.label)
            if label is not None:
                first.label, first.label_id = label, int(row.id)
        outcomes = _json_or_none(row.outcomes)
        if isinstance(outcomes, dict):
            for name, value in outcomes.items():
                if name not in first.outcomes and _is_number(value):
                    first.outcomes[name] = (int(row.id), float(value))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and (isinstance(v, bool) or math.isfinite(v))


@dataclass(frozen=True, slots=True)
class JoinedRow:
    """One logged call of a request that has feedback, with that feedback."""

    request_id: str
    model: str
    version: str
    role: str
    prediction_id: int
    ts: float
    latency_ms: float
    status: int
    error_class: str | None
    prediction: Any
    slices: dict[str, Any]
    label: Any
    outcomes: dict[str, float]
    feedback_id: int
    feedback_ts: float


def _decode(text: str | None, default: Any) -> Any:
    return default if text is None else json.loads(text)


def joined(
    engine: Engine, model: str, *, after_feedback_id: int = 0, limit: int | None = None
) -> list[JoinedRow]:
    """Every logged call (all versions and roles) of each request of `model` whose feedback
    changed after `after_feedback_id`, with its folded feedback, ordered by feedback id.

    Incremental use: keep `max(row.feedback_id)` and pass it next time; a request that got
    more feedback comes back with its new fold, which replaces the old one. `limit` caps
    how many feedback items are considered in this call.
    """
    of_model = exists().where(
        (predictions.c.request_id == feedback.c.request_id) & (predictions.c.model == model)
    )
    new = select(feedback.c.id, feedback.c.request_id).where(
        (feedback.c.id > after_feedback_id) & of_model
    )
    new = new.order_by(feedback.c.id)
    if limit is not None:
        new = new.limit(limit)
    with engine.connect() as conn:
        new_rows = list(conn.execute(new))
        if not new_rows:
            return []
        cursor = new_rows[-1].id
        request_ids = sorted({r.request_id for r in new_rows})
        fb_rows: list[Any] = []
        calls: list[Any] = []
        for chunk in _chunks(request_ids):
            # items after the cursor belong to the next page, so every page is consistent
            fb_rows += conn.execute(
                select(feedback).where(feedback.c.request_id.in_(chunk) & (feedback.c.id <= cursor))
            ).all()
            calls += conn.execute(
                select(predictions).where(
                    predictions.c.request_id.in_(chunk) & (predictions.c.model == model)
                )
            ).all()
    folds = fold_feedback(fb_rows)
    out = [
        JoinedRow(
            request_id=p.request_id,
            model=p.model,
            version=p.version,
            role=p.role,
            prediction_id=p.id,
            ts=p.ts,
            latency_ms=p.latency_ms,
            status=p.status,
            error_class=p.error_class,
            prediction=_decode(p.prediction, None),
            slices=_decode(p.slices, {}),
            label=folds[p.request_id].label,
            outcomes=folds[p.request_id].outcomes,
            feedback_id=folds[p.request_id].feedback_id,
            feedback_ts=folds[p.request_id].ts,
        )
        for p in calls
    ]
    out.sort(key=lambda r: (r.feedback_id, r.prediction_id))
    return out
