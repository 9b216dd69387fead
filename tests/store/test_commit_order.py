"""Ids become visible in increasing order, so readers that page by id skip nothing.

Two writers on one store: the first draws its ids and holds its transaction open; the
second must not commit a higher id meanwhile (on PostgreSQL it waits on the writers'
advisory lock; SQLite allows one writer at a time anyway). Without that, an incremental
reader that saw the second batch would move its cursor past the first batch's ids for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, insert, select

from coalmine.log.record import PredictionRecord
from coalmine.store.feedback import FEEDBACK_LOCK_KEY, FeedbackStore
from coalmine.store.predictions import insert_batch, insert_batch_in, serialize_writers_in
from coalmine.store.schema import feedback, predictions

HOLD_S = 0.6


def _record(request_id: str) -> PredictionRecord:
    return PredictionRecord(request_id, "m", "v1", "stable", 1.0, 1.0, 200, prediction=[1])


def _second_commits_after_first(
    engine: Engine, first: Callable[[Connection], object], second: Callable[[], object]
) -> None:
    """Run `first` in a transaction held open HOLD_S; meanwhile `second` (its own
    transaction) must not finish before the first commits."""
    drawn = threading.Event()
    committed: list[float] = []

    def hold() -> None:
        with engine.begin() as conn:
            first(conn)
            drawn.set()
            time.sleep(HOLD_S)
        committed.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    assert drawn.wait(10)
    second()
    finished = time.monotonic()
    holder.join(10)
    assert committed and finished >= committed[0] - 0.05


def _ids(engine: Engine, table: object, keys: tuple[str, ...]) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.request_id).order_by(table.c.id)).all()  # type: ignore[attr-defined]
    return [r.request_id for r in rows if r.request_id in keys]


def test_log_writers_commit_in_id_order(store_engine: Engine) -> None:
    _second_commits_after_first(
        store_engine,
        lambda conn: insert_batch_in(conn, [_record("a")]),
        lambda: insert_batch(store_engine, [_record("b")]),
    )
    assert _ids(store_engine, predictions, ("a", "b")) == ["a", "b"]


def test_feedback_writers_commit_in_id_order(store_engine: Engine) -> None:
    insert_batch(store_engine, [_record("a"), _record("b")])

    def first(conn: Connection) -> None:
        serialize_writers_in(conn, FEEDBACK_LOCK_KEY)
        conn.execute(insert(feedback).values(request_id="a", label="1", ts=time.time()))

    store = FeedbackStore(store_engine)
    _second_commits_after_first(
        store_engine, first, lambda: store.add([{"request_id": "b", "label": 0}])
    )
    assert _ids(store_engine, feedback, ("a", "b")) == ["a", "b"]
