"""The idempotent insert behind every collector: a call already logged is not logged again.

A reporter that retries a batch after a timeout (the batch may have been written) must not
double-count, so a record is skipped when the log already holds a row of the same model,
request id and role. The check and the insert run in one transaction under the log's writer
lock (PostgreSQL's advisory lock, see `store.predictions.serialize_writers_in`), and under a
process-wide lock for SQLite, whose single writer serialises the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from coalmine.log.record import PredictionRecord
from coalmine.store.predictions import encode_record, serialize_writers_in
from coalmine.store.schema import predictions

__all__ = ["Inserted", "insert_new"]

_lock = threading.Lock()
_CHUNK = 400  # request ids per lookup: well under SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class Inserted:
    written: int
    duplicates: int


def _key(record: PredictionRecord) -> tuple[str, str, str]:
    # as stored: encode_record cuts strings to the column widths
    row = encode_record(record)
    return row["model"], row["request_id"], row["role"]


def insert_new(engine: Engine, records: Sequence[PredictionRecord]) -> Inserted:
    """Insert the records whose (model, request id, role) the log does not hold yet; one
    transaction. A key given twice in `records` is written once."""
    fresh: dict[tuple[str, str, str], PredictionRecord] = {}
    for record in records:
        fresh.setdefault(_key(record), record)
    if not fresh:
        return Inserted(0, len(records))
    P = predictions
    with _lock, engine.begin() as conn:
        serialize_writers_in(conn)  # held until commit: no other writer slips in between
        keys = list(fresh)
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            ids = {k[1] for k in chunk}
            found = conn.execute(
                select(P.c.model, P.c.request_id, P.c.role).where(P.c.request_id.in_(ids))
            )
            for model, request_id, role in found:  # the request id's index did the work
                fresh.pop((model, request_id, role), None)
        if fresh:
            conn.execute(insert(P), [encode_record(r) for r in fresh.values()])
    return Inserted(len(fresh), len(records) - len(fresh))
