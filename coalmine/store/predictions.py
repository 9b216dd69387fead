"""The prediction log table: batched inserts and incremental reads (SQLAlchemy Core).

Readers page by `id` (monotonic per table), so an analysis loop can resume where it left off
with `read_since(..., after_id=last_seen)`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, text

from coalmine.log.record import PredictionRecord
from coalmine.store.schema import predictions

__all__ = [
    "LOG_LOCK_KEY", "count", "encode_record", "insert_batch", "insert_batch_in", "read_since",
    "serialize_writers_in",
]  # fmt: skip

# Client-chosen strings (a request id from a header) must never fail a whole batch on
# PostgreSQL's length checks, so they are cut to the column width first.
_WIDTHS = {
    name: predictions.c[name].type.length  # type: ignore[attr-defined]
    for name in ("request_id", "model", "version", "role", "error_class")
}


# default=str: a prediction holding a non-JSON type is logged as its text, not lost. Built
# once: json.dumps with any option builds a new encoder per call, which tripled the cost of
# encoding a row's prediction and slices (the log writer encodes two per served request).
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def _cut(value: str | None, width: int) -> str | None:
    return value if value is None or len(value) <= width else value[:width]


def encode_record(record: PredictionRecord) -> dict[str, Any]:
    """The row of one record: JSON-encoded prediction and slices, strings cut to width."""
    return {
        "request_id": _cut(record.request_id, _WIDTHS["request_id"]),
        "model": _cut(record.model, _WIDTHS["model"]),
        "version": _cut(record.version, _WIDTHS["version"]),
        "role": _cut(record.role, _WIDTHS["role"]),
        "ts": float(record.ts),
        "latency_ms": float(record.latency_ms),
        "status": int(record.status),
        "error_class": _cut(record.error_class, _WIDTHS["error_class"]),
        "prediction": None if record.prediction is None else _json(record.prediction),
        "input": record.input,
        "slices": _json(record.slices or {}),
        "canary_weight_bp": int(record.canary_weight_bp),
        "rollout_id": record.rollout_id,
        "scores": None if record.scores is None else _json(record.scores),
    }


# Readers page by id, which is only safe if ids become visible in increasing order. On
# PostgreSQL two writers (gateway processes) could commit out of id order and a reader would
# skip the late, lower ids for good; a transaction-scoped advisory lock taken before the ids
# are drawn makes writers draw and commit one at a time. SQLite has one writer anyway.
LOG_LOCK_KEY = 0x636F616C  # "coal"


def serialize_writers_in(conn: Connection, key: int = LOG_LOCK_KEY) -> None:
    """On PostgreSQL, hold `key`'s advisory lock until this transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def insert_batch_in(conn: Connection, records: Sequence[PredictionRecord]) -> int:
    """Insert `records` on `conn` with one executemany; returns how many."""
    if not records:
        return 0
    serialize_writers_in(conn)
    conn.execute(insert(predictions), [encode_record(r) for r in records])
    return len(records)


def insert_batch(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Insert `records` in one transaction (all or none); returns how many."""
    with engine.begin() as conn:
        return insert_batch_in(conn, records)


def read_since(
    engine: Engine, model: str | None = None, after_id: int = 0, limit: int = 10_000
) -> list[Row[Any]]:
    """Up to `limit` rows with id > after_id (of `model`, or every model), oldest first.

    `prediction` and `slices` are JSON text; decode with `json.loads`.
    """
    stmt = select(predictions).where(predictions.c.id > after_id)
    if model is not None:
        stmt = stmt.where(predictions.c.model == model)
    stmt = stmt.order_by(predictions.c.id).limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def count(
    engine: Engine,
    model: str | None = None,
    *,
    version: str | None = None,
    role: str | None = None,
    request_id: str | None = None,
) -> int:
    """How many logged calls match every filter given."""
    stmt = select(func.count()).select_from(predictions)
    for column, value in (
        (predictions.c.model, model),
        (predictions.c.version, version),
        (predictions.c.role, role),
        (predictions.c.request_id, request_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())
