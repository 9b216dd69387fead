"""The collectors' idempotent insert on SQLite and PostgreSQL: concurrent reporters of the
same calls write each (model, request id, role) once."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sqlalchemy import Engine, func, select

from coalmine.collect import store
from coalmine.collect.store import insert_new
from coalmine.log.record import PredictionRecord
from coalmine.store.schema import predictions


def _record(i: int, role: str = "stable") -> PredictionRecord:
    return PredictionRecord(f"r{i}", "m", "v1", role, 1.0, 2.0, 200, prediction=[i])


def test_each_call_is_written_once(store_engine: Engine) -> None:
    assert insert_new(store_engine, [_record(1), _record(1), _record(2)]).written == 2
    done = insert_new(store_engine, [_record(1), _record(2), _record(1, "shadow")])
    assert (done.written, done.duplicates) == (1, 2)
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(predictions)).scalar_one() == 3


def test_concurrent_reporters_of_the_same_calls_write_them_once(
    store_engine: Engine, monkeypatch: Any
) -> None:
    if store_engine.dialect.name == "postgresql":
        # without the process lock: PostgreSQL's advisory lock alone must serialise them,
        # as it does for reporters in other processes
        monkeypatch.setattr(store, "_lock", contextlib.nullcontext())
    batches = [[_record(i) for i in range(k, k + 60)] for k in range(0, 80, 10)]
    errors: list[BaseException] = []

    def report(batch: list[PredictionRecord]) -> None:
        try:
            insert_new(store_engine, batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(b,)) for b in batches * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with store_engine.connect() as conn:
        ids = [r for (r,) in conn.execute(select(predictions.c.request_id))]
    assert len(ids) == len(set(ids)) == 130


def test_strings_are_compared_as_stored(store_engine: Engine) -> None:
    long_id = "x" * 300  # cut to the column's 128 characters when stored
    record = PredictionRecord(long_id, "m", "v1", "stable", 1.0, 2.0, 200)
    assert insert_new(store_engine, [record]).written == 1
    assert insert_new(store_engine, [record]).duplicates == 1
