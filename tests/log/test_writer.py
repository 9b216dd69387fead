"""BatchWriter against real stores: every accepted record lands, a full buffer drops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import Engine, create_engine

from coalmine.config import LoggingConfig
from coalmine.log import metrics
from coalmine.log.record import PredictionRecord
from coalmine.log.writer import BatchWriter
from coalmine.store.engine import open_engine
from coalmine.store.predictions import count, insert_batch, read_since


def record(i: int, **overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": f"r{i}",
        "model": "iris",
        "version": "v1" if i % 2 else "v2",
        "role": "stable" if i % 2 else "canary",
        "ts": 1_700_000_000.0 + i,
        "latency_ms": 1.5,
        "status": 200,
        "prediction": {"predictions": [i % 3]},
        "input": '{"x":1}',
        "slices": {"device": "ios"},
        "canary_weight_bp": 1000,
        "rollout_id": 4,
    }
    values.update(overrides)
    return PredictionRecord(**values)  # type: ignore[arg-type]


def config(**kwargs: object) -> LoggingConfig:
    return LoggingConfig.model_validate({"flush_interval_s": 0.02, **kwargs})


async def test_n_submitted_records_become_exactly_n_rows(store_engine: Engine) -> None:
    writer = BatchWriter(store_engine, config(batch_size=64))
    await writer.start()
    assert all(writer.submit(record(i)) for i in range(1000))
    await writer.close()
    assert (writer.written, writer.dropped) == (1000, 0)
    assert count(store_engine, "iris") == 1000
    assert count(store_engine, "iris", version="v2", role="canary") == 500
    rows = read_since(store_engine, "iris", 0, limit=2000)
    assert sorted(r.request_id for r in rows) == sorted(f"r{i}" for i in range(1000))
    first = next(r for r in rows if r.request_id == "r7")
    assert json.loads(first.prediction) == {"predictions": [1]}
    assert json.loads(first.slices) == {"device": "ios"}
    assert (first.status, first.canary_weight_bp, first.rollout_id) == (200, 1000, 4)


async def test_close_flushes_everything_even_before_an_interval_passed(
    store_engine: Engine,
) -> None:
    writer = BatchWriter(store_engine, config(flush_interval_s=3600, batch_size=10_000))
    await writer.start()
    for i in range(321):
        writer.submit(record(i))
    await asyncio.sleep(0)  # the flush task is parked on its hour-long interval
    assert count(store_engine) == 0
    await writer.close()
    assert count(store_engine) == 321
    assert writer.buffered() == 0
    assert writer.submit(record(999)) is False  # closed: dropped and counted
    assert writer.dropped == 1


async def test_a_never_started_writer_still_flushes_on_close(store_engine: Engine) -> None:
    writer = BatchWriter(store_engine, config())
    writer.submit(record(1))
    await writer.close()
    assert count(store_engine) == 1


async def test_full_buffer_drops_and_counts_without_blocking(store_engine: Engine) -> None:
    before = metrics.DROPPED._value.get()
    writer = BatchWriter(store_engine, config(buffer_size=10, flush_interval_s=3600))
    accepted = [writer.submit(record(i)) for i in range(25)]  # nothing drains: not started
    assert accepted == [True] * 10 + [False] * 15
    assert writer.dropped == 15
    assert metrics.DROPPED._value.get() - before == 15
    assert writer.buffered() == 10
    await writer.close()
    assert count(store_engine) == 10


async def test_a_row_the_database_rejects_does_not_block_the_rest(store_engine: Engine) -> None:
    writer = BatchWriter(store_engine, config())
    await writer.start()
    for i in range(5):
        writer.submit(record(i, status="not a status") if i == 2 else record(i))
    # a client's over-long request id is cut to the column, not a failed batch
    writer.submit(record(5, request_id="x" * 500))
    await writer.close()
    assert (writer.written, writer.dropped) == (5, 1)
    assert count(store_engine, request_id="r2") == 0
    assert count(store_engine, request_id="x" * 128) == 1


async def test_failed_writes_are_retried_until_the_database_appears(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'later' / 'c.db'}"  # the directory does not exist yet
    engine = create_engine(url)
    writer = BatchWriter(engine, config())
    await writer.start()
    for i in range(50):
        writer.submit(record(i))
    while writer.write_errors < 2:  # the loop keeps running through failures
        await asyncio.sleep(0.02)
    (tmp_path / "later").mkdir()
    open_engine(url).dispose()
    await writer.close()
    assert (writer.written, writer.dropped) == (50, 0)
    assert count(engine) == 50
    engine.dispose()


async def test_close_gives_up_on_a_dead_database_and_counts_the_loss(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'c.db'}")
    writer = BatchWriter(engine, config(batch_size=10))
    await writer.start()
    for i in range(30):
        writer.submit(record(i))
    await writer.close(timeout_s=0.3)
    assert (writer.written, writer.dropped) == (0, 30)
    assert writer.write_errors >= 1
    engine.dispose()


def test_insert_batch_of_nothing_is_a_no_op(store_engine: Engine) -> None:
    assert insert_batch(store_engine, []) == 0
    assert read_since(store_engine, "iris") == []


async def test_a_locked_sqlite_database_is_retried_not_dropped(tmp_path: Path) -> None:
    """A locked database (another writer holds it) fails on the database, not the rows: the
    batch waits and is written once the lock is released."""
    import sqlite3

    path = tmp_path / "c.db"
    open_engine(f"sqlite:///{path}").dispose()
    # no busy_timeout pragma here: the driver gives up on the lock after 50 ms
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    writer = BatchWriter(engine, config())
    await writer.start()
    for i in range(20):
        writer.submit(record(i))
    while writer.write_errors < 2:
        await asyncio.sleep(0.02)
    assert (writer.written, writer.dropped) == (0, 0)
    holder.execute("ROLLBACK")
    holder.close()
    await writer.close()
    assert (writer.written, writer.dropped) == (20, 0)
    assert count(engine) == 20
    engine.dispose()
