"""The writer process's batches on one held connection (SQLite and PostgreSQL): one
connection across batches, each batch all or none, SQLAlchemy's errors as `write_batch`
raised them, and a new connection after a lost or locked database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy import exc as sa_exc

from coalmine.log.batches import transient
from coalmine.store.engine import open_engine
from coalmine.store.held import HeldConnection
from coalmine.store.predictions import count, read_since
from tests.store.test_copy_writes import record


def ids(engine: Engine) -> list[str]:
    return [r.request_id for r in read_since(engine, "iris", 0)]


def test_batches_go_through_one_connection_held_between_them(store_engine: Engine) -> None:
    held = HeldConnection(store_engine)
    assert held.write_batch([record(1), record(2)]) == 2
    assert store_engine.pool.checkedout() == 1  # kept, not returned to the pool
    assert held.write_batch([record(3)]) == 1
    assert store_engine.pool.checkedout() == 1  # the same one, not a second
    assert ids(store_engine) == ["r1", "r2", "r3"]  # committed: seen from another connection
    held.close()
    assert store_engine.pool.checkedout() == 0


def test_a_rejected_batch_writes_nothing_and_the_next_one_is_written(
    store_engine: Engine,
) -> None:
    held = HeldConnection(store_engine)
    held.write_batch([record(1)])
    with pytest.raises(sa_exc.IntegrityError) as caught:  # model is NOT NULL
        held.write_batch([record(2), record(3, model=None)])
    assert not transient(caught.value)  # the writer writes it row by row, not retried
    assert held.write_batch([record(4)]) == 1
    assert ids(store_engine) == ["r1", "r4"]
    held.close()


@pytest.mark.postgres
def test_a_lost_connection_is_a_retryable_error_and_the_next_batch_reconnects(
    store_engine: Engine,
) -> None:
    if store_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    held = HeldConnection(store_engine)
    held.write_batch([record(1)])
    with store_engine.connect() as other:  # the server ends every other backend: a restart
        other.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    with pytest.raises(sa_exc.OperationalError) as caught:
        held.write_batch([record(2)])
    assert transient(caught.value)  # the writer backs off and writes this batch again
    assert held.write_batch([record(2)]) == 1
    assert ids(store_engine) == ["r1", "r2"]
    held.close()


def test_a_locked_sqlite_database_is_a_retryable_error_then_written(tmp_path: Path) -> None:
    path = f"{tmp_path}/c.db"
    open_engine(f"sqlite:///{path}").dispose()
    # no busy_timeout pragma here: the driver gives up on the lock after 50 ms
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    held = HeldConnection(engine)
    held.write_batch([record(1)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sa_exc.OperationalError) as caught:
        held.write_batch([record(2)])
    assert transient(caught.value) and "locked" in str(caught.value)
    holder.execute("ROLLBACK")
    holder.close()
    assert held.write_batch([record(2)]) == 1
    assert count(engine) == 2
    held.close()
    engine.dispose()
