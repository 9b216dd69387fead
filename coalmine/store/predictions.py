"""The prediction log table: batched writes and incremental reads (SQLAlchemy Core).

Readers page by `id` (monotonic per table), so an analysis loop can resume where it left off
with `read_since(..., after_id=last_seen)`. On PostgreSQL the writer's batches go through
`COPY ... FROM STDIN` (`copy_batch_in`), several times faster than a batched INSERT
(benchmarks/store.py); other databases take the INSERT. A record is encoded straight to a
tuple in COLUMNS' order (`encode_row`); on SQLite the tuples go to the driver's executemany
as they are (`exec_driver_sql`: no statement compiled, no dict per row, errors still raised
as SQLAlchemy's), about half the cost of a Core insert of dicts (benchmarks/log_writer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, text
from sqlalchemy import exc as sa_exc

from coalmine.json_text import compact_json
from coalmine.log.record import PredictionRecord
from coalmine.store.schema import predictions

__all__ = [
    "COLUMNS", "LOG_LOCK_KEY", "copy_batch_in", "count", "encode_record", "encode_row",
    "insert_batch", "insert_batch_in", "read_since", "serialize_writers_in", "write_batch",
]  # fmt: skip

# the columns a record fills, in encode_row's order (`id` comes from the table)
COLUMNS = (
    "request_id", "model", "version", "role", "ts", "latency_ms", "status", "error_class",
    "prediction", "input", "slices", "canary_weight_bp", "rollout_id", "scores",
    "sample_weight",
)  # fmt: skip
assert set(COLUMNS) == {c.name for c in predictions.c} - {"id"}

# Client-chosen strings (a request id from a header) must never fail a whole batch on
# PostgreSQL's length checks, so they are cut to the column width first.
_WIDTHS = {
    name: predictions.c[name].type.length  # type: ignore[attr-defined]
    for name in ("request_id", "model", "version", "role", "error_class")
}
_W_REQUEST, _W_MODEL, _W_VERSION, _W_ROLE, _W_ERROR = _WIDTHS.values()
_SQLITE_INSERT = "INSERT INTO {} ({}) VALUES ({})".format(
    predictions.name, ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
)
_COPY = f"COPY {predictions.name} ({', '.join(COLUMNS)}) FROM STDIN"


def _cut(value: str | None, width: int) -> str | None:
    return value if value is None or len(value) <= width else value[:width]


def encode_row(record: PredictionRecord) -> tuple[Any, ...]:
    """The row of one record in COLUMNS' order: JSON-encoded prediction, slices and scores,
    strings cut to their column's width."""
    prediction, slices, scores = record.prediction, record.slices, record.scores
    weight = record.sample_weight
    return (
        _cut(record.request_id, _W_REQUEST),
        _cut(record.model, _W_MODEL),
        _cut(record.version, _W_VERSION),
        _cut(record.role, _W_ROLE),
        float(record.ts),
        float(record.latency_ms),
        int(record.status),
        _cut(record.error_class, _W_ERROR),
        None if prediction is None else compact_json(prediction),
        record.input,
        compact_json(slices) if slices else "{}",
        int(record.canary_weight_bp),
        record.rollout_id,
        None if scores is None else compact_json(scores),
        None if weight == 1.0 else float(weight),
    )


def encode_record(record: PredictionRecord) -> dict[str, Any]:
    """`encode_row` as a dict by column name."""
    return dict(zip(COLUMNS, encode_row(record), strict=True))


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
    rows = [encode_row(r) for r in records]  # before the lock: writers wait less on it
    serialize_writers_in(conn)
    if conn.dialect.name == "sqlite":  # qmark tuples, as the driver takes them
        conn.exec_driver_sql(_SQLITE_INSERT, rows)
    else:
        conn.execute(insert(predictions), [dict(zip(COLUMNS, row, strict=True)) for row in rows])
    return len(records)


def insert_batch(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Insert `records` in one transaction (all or none); returns how many."""
    with engine.begin() as conn:
        return insert_batch_in(conn, records)


def copy_batch_in(conn: Connection, records: Sequence[PredictionRecord]) -> int:
    """Write `records` on `conn` with PostgreSQL's COPY (INSERT elsewhere); returns how many.

    Runs in the caller's transaction, after the same advisory lock as `insert_batch_in`, so
    ids still become visible in order. A psycopg error is raised as SQLAlchemy's (as an
    INSERT's would be), so the writer tells a lost connection from a rejected row.
    """
    if conn.dialect.name != "postgresql":
        return insert_batch_in(conn, records)
    if not records:
        return 0
    import psycopg

    # encoded before the lock, which every writer takes in turn: only the COPY waits on it
    rows = [encode_row(r) for r in records]
    raw: Any = conn.connection.driver_connection
    serialize_writers_in(conn)
    try:
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as error:
        lost = bool(raw.closed or raw.broken)
        if lost:
            conn.invalidate()  # the pool must not hand this connection out again
        raise sa_exc.DBAPIError.instance(
            _COPY, None, error, psycopg.Error, connection_invalidated=lost,
            dialect=conn.dialect,
        ) from error  # fmt: skip
    return len(records)


def write_batch(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Write `records` in one transaction (all or none), by COPY on PostgreSQL."""
    with engine.begin() as conn:
        return copy_batch_in(conn, records)


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
    weighted: bool = False,
) -> int:
    """How many logged calls match every filter given; `weighted`: how many calls were made,
    each sampled row counting for its `sample_weight` (rounded)."""
    measure = (
        func.coalesce(func.sum(func.coalesce(predictions.c.sample_weight, 1.0)), 0)
        if weighted
        else func.count()
    )
    stmt = select(measure).select_from(predictions)
    for column, value in (
        (predictions.c.model, model),
        (predictions.c.version, version),
        (predictions.c.role, role),
        (predictions.c.request_id, request_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    with engine.connect() as conn:
        return round(conn.execute(stmt).scalar_one())
