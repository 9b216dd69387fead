"""The log's batches on one connection held across them (the writer process's).

`write_batch(engine, rows)` checks a connection out of the engine's pool and back in for each
batch: the pool's bookkeeping, its reset on return and its events cost about 30–60 µs a batch
(benchmarks/log_writer.py), on the core the gateway runs on. The writer process writes one
batch at a time for its whole life, so it holds one `Connection` and a batch is BEGIN, the
insert (COPY on PostgreSQL), COMMIT.

Errors are raised as they were (SQLAlchemy's, so `batches.transient` still tells a lost or
locked database from a rejected row). After any error the connection is let go (back to the
pool, or discarded if SQLAlchemy invalidated it) and the next batch opens another: a lost
connection costs one failed attempt, which the writer retries after its backoff — where the
pool's pre-ping would have found it before the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from sqlalchemy import Connection, Engine

from coalmine.log.record import PredictionRecord
from coalmine.store.predictions import copy_batch_in

__all__ = ["HeldConnection"]


class HeldConnection:
    """`write_batch` on one connection, opened at the first batch and after any error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def write_batch(self, records: Sequence[PredictionRecord]) -> int:
        """Write `records` in one transaction (all or none), by COPY on PostgreSQL."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self.engine.connect()
        try:
            with conn.begin():
                return copy_batch_in(conn, records)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let the connection go (the next batch opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            # a connection that failed may fail its close too; it is done with either way
            with contextlib.suppress(Exception):
                conn.close()
