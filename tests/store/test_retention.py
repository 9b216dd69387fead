"""Log retention on SQLite and PostgreSQL: old rows go, an active rollout's rows stay; on
PostgreSQL whole day partitions are dropped, and the partitioning migration keeps every row."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text, update

from coalmine.config import parse_config
from coalmine.log.record import PredictionRecord
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRepository
from coalmine.store.engine import alembic_config, open_engine, upgrade
from coalmine.store.predictions import write_batch
from coalmine.store.retention import (
    CLOCK_MARGIN_S,
    DAY_S,
    RetentionLoop,
    create_day_partitions_in,
    cutoff,
    day_partitions_in,
    day_start,
    droppable,
    is_partitioned,
    partition_name,
    prune,
)
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import rollouts
from tests.conftest import fresh_postgres_database

NOW = day_start(time.time()) + 12 * 3600.0  # noon today (UTC), as the tests' "now"


def test_cutoff_is_the_age_limit_or_the_oldest_active_rollouts_start() -> None:
    assert cutoff(NOW, 7) == NOW - 7 * DAY_S
    assert cutoff(NOW, 7, [NOW - DAY_S]) == NOW - 7 * DAY_S  # a young rollout changes nothing
    old = NOW - 20 * DAY_S
    assert cutoff(NOW, 7, [NOW - DAY_S, old]) == old - CLOCK_MARGIN_S


def test_only_days_wholly_before_the_cutoff_are_droppable() -> None:
    days = {partition_name(NOW - k * DAY_S): day_start(NOW - k * DAY_S) for k in range(5)}
    limit = day_start(NOW) - 2 * DAY_S + 1.0  # one second into the day two days ago
    assert droppable(days, limit) == [partition_name(NOW - 4 * DAY_S),
                                      partition_name(NOW - 3 * DAY_S)]  # fmt: skip
    assert partition_name(1_764_460_800.0) == "predictions_20251130"


def rec(i: int, ts: float, model: str = "iris") -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i}", model=model, version="v1", role="stable", ts=ts, latency_ms=1.0,
        status=200, prediction={"predictions": [1]}, input=None, slices={},
    )  # fmt: skip


def request_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT request_id FROM predictions")).scalars())


def start_rollout(engine: Engine, started_at: float) -> int:
    config = parse_config(
        {"models": [{"name": "iris", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                     "routing": {"stable": "v1"}}]}
    )  # fmt: skip
    RouteRepository(engine).seed_from_config(config)
    record = RolloutRepository(engine).create("iris", "v2", "http://127.0.0.1:8", parse_spec({}))
    with engine.begin() as conn:
        conn.execute(update(rollouts).where(rollouts.c.id == record.id).values(
            started_at=started_at))  # fmt: skip
    return record.id


def end_rollout(engine: Engine, rollout_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(
            active_model=None, ended_at=NOW))  # fmt: skip


def test_prune_keeps_what_an_active_rollout_reads_then_lets_it_go(store_engine: Engine) -> None:
    ages = {"ancient": 40, "rollout": 10, "week": 6, "today": 0}
    records = [rec(i, NOW - days * DAY_S) for i, days in enumerate(ages.values())]
    write_batch(store_engine, records)
    with store_engine.begin() as conn:
        conn.execute(text("INSERT INTO feedback (request_id, label, ts) VALUES "
                          "('r0', '1', :old), ('r3', '1', :now)"), {"old": NOW - 40 * DAY_S,
                                                                   "now": NOW})  # fmt: skip
    rollout = start_rollout(store_engine, started_at=NOW - 12 * DAY_S)

    first = prune(store_engine, 7, now=NOW, batch=2)
    assert first.cutoff == NOW - 12 * DAY_S - CLOCK_MARGIN_S
    assert request_ids(store_engine) == {"r1", "r2", "r3"}  # the rollout's rows stay
    assert (first.rows_deleted, first.feedback_deleted) == (1, 1)

    end_rollout(store_engine, rollout)
    second = prune(store_engine, 7, now=NOW, batch=2)
    assert request_ids(store_engine) == {"r2", "r3"}
    assert second.rows_deleted == 1
    assert prune(store_engine, 7, now=NOW).rows_deleted == 0  # idempotent


@pytest.mark.postgres
def test_postgresql_drops_whole_day_partitions_and_never_a_protected_one(
    postgres_server: str,
) -> None:
    engine = open_engine(fresh_postgres_database(postgres_server))
    try:
        with engine.begin() as conn:
            assert is_partitioned(conn)
            for days in (30, 20, 10):  # days that had their partitions made in their time
                create_day_partitions_in(conn, now=NOW - days * DAY_S, days_ahead=0)
        write_batch(engine, [rec(i, NOW - d * DAY_S) for i, d in enumerate((30, 20, 10, 0))])
        write_batch(engine, [rec(9, NOW - 25 * DAY_S)])  # a day with no partition: default
        rollout = start_rollout(engine, started_at=NOW - 15 * DAY_S)

        result = prune(engine, 7, now=NOW)
        assert result.partitions_dropped == [partition_name(NOW - 30 * DAY_S),
                                             partition_name(NOW - 20 * DAY_S)]  # fmt: skip
        assert result.rows_deleted == 1  # the default partition's old row, deleted
        assert request_ids(engine) == {"r2", "r3"}
        with engine.begin() as conn:
            days = day_partitions_in(conn)
        assert partition_name(NOW - 10 * DAY_S) in days  # the active rollout reads it
        # the days ahead are ready for the writers
        assert {partition_name(NOW + k * DAY_S) for k in range(4)} <= set(days)

        end_rollout(engine, rollout)
        assert prune(engine, 7, now=NOW).partitions_dropped == [partition_name(NOW - 10 * DAY_S)]
        assert request_ids(engine) == {"r3"}
        write_batch(engine, [rec(10, NOW + DAY_S)])  # tomorrow's row lands in its partition
        with engine.connect() as conn:
            where = conn.execute(
                text("SELECT tableoid::regclass::text FROM predictions WHERE request_id='r10'")
            ).scalar_one()
        assert where == partition_name(NOW + DAY_S)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_partitioning_migration_keeps_every_row_and_id(postgres_server: str) -> None:
    engine = open_engine(fresh_postgres_database(postgres_server))
    try:
        command.downgrade(alembic_config(engine), "0007")  # back to the plain table
        with engine.begin() as conn:
            assert not is_partitioned(conn)
        now = time.time()
        with engine.begin() as conn:  # the columns of 0007's log, as its writers wrote them
            for i, days in enumerate((100, 3, 0)):
                conn.execute(
                    text("INSERT INTO predictions (request_id, model, version, role, ts, "
                         "latency_ms, status, canary_weight_bp) "
                         "VALUES (:r, 'iris', 'v1', 'stable', :ts, 1.0, 200, 0)"),
                    {"r": f"r{i}", "ts": now - days * DAY_S},
                )  # fmt: skip
        with engine.connect() as conn:
            before = conn.execute(text("SELECT id, request_id FROM predictions ORDER BY id")).all()
        upgrade(engine)
        with engine.connect() as conn:
            assert is_partitioned(conn)
            after = conn.execute(text("SELECT id, request_id FROM predictions ORDER BY id")).all()
            today = conn.execute(
                text("SELECT tableoid::regclass::text FROM predictions WHERE request_id='r2'")
            ).scalar_one()
        assert after == before
        assert today == partition_name(now)
        write_batch(engine, [rec(3, now)])
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM predictions ORDER BY id")).scalars().all()
        assert ids[-1] > before[-1][0]  # the sequence carried on
    finally:
        engine.dispose()


async def test_the_controllers_retention_loop_prunes_and_stops(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        now = time.time()
        write_batch(engine, [rec(0, now - 40 * DAY_S), rec(1, now)])
        loop = RetentionLoop(engine, retention_days=30, interval_s=3600)
        task = asyncio.create_task(loop.run(first_delay_s=0.01))
        async with asyncio.timeout(10):
            while request_ids(engine) != {"r1"}:
                await asyncio.sleep(0.02)
        loop.stop()
        async with asyncio.timeout(5):
            await task  # returns at once, not after its hour-long interval
    finally:
        engine.dispose()
