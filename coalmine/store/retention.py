"""Retention of the prediction log: rows older than `store.retention_days` go, except those
an active rollout still reads.

An active rollout's evaluator reads its model's rows from the rollout's start (and joins
late labels to them), so the cutoff is the earlier of `now - retention_days` and the oldest
active rollout's start (less an hour for clocks that differ between machines). Feedback
rows older than the cutoff go too.

On PostgreSQL the log is partitioned by UTC day (migration 0008): a day entirely before the
cutoff is dropped as a whole partition (no row-by-row delete, no bloat), and the days ahead
are created here so new rows land in their day; rows in the default partition (anything no
day covers) are deleted in batches. On SQLite, and on a PostgreSQL log that is not
partitioned, rows are deleted in batches, each its own short transaction, so the gateway's
writer never waits long.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

__all__ = [
    "PruneResult",
    "RetentionLoop",
    "create_day_partitions_in",
    "cutoff",
    "day_partitions_in",
    "droppable",
    "partition_name",
    "prune",
]

log = logging.getLogger(__name__)

DAY_S = 86_400.0
CLOCK_MARGIN_S = 3_600.0  # gateways' and controllers' clocks may differ this much
DAYS_AHEAD = 3  # day partitions kept ready in advance
DEFAULT_PARTITION = "predictions_default"
_DAY_NAME = re.compile(r"^predictions_(\d{8})$")


# -- pure ---------------------------------------------------------------------------------


def cutoff(now: float, retention_days: float, active_starts: Iterable[float] = ()) -> float:
    """Rows with `ts` below this may go; every row an active rollout reads is above it."""
    limit = now - retention_days * DAY_S
    starts = list(active_starts)
    if starts:
        limit = min(limit, min(starts) - CLOCK_MARGIN_S)
    return limit


def day_start(ts: float) -> float:
    return (ts // DAY_S) * DAY_S


def partition_name(day: float) -> str:
    """`predictions_YYYYMMDD` of the UTC day starting at `day`."""
    return "predictions_" + datetime.fromtimestamp(day, UTC).strftime("%Y%m%d")


def droppable(partitions: Mapping[str, float], limit: float) -> list[str]:
    """Day partitions (name -> day start) whose whole day lies before `limit`, oldest first."""
    return sorted(name for name, day in partitions.items() if day + DAY_S <= limit)


# -- PostgreSQL partitions ------------------------------------------------------------------


def is_partitioned(conn: Connection, table: str = "predictions") -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :t AND pg_table_is_visible(c.oid)"
        ),
        {"t": table},
    )
    return found.first() is not None


def day_partitions_in(conn: Connection, table: str = "predictions") -> dict[str, float]:
    """The day partitions of `table`: name -> start of its UTC day."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :t AND pg_table_is_visible(p.oid)"
        ),
        {"t": table},
    ).scalars()
    out = {}
    for name in rows:
        m = _DAY_NAME.match(name)
        if m:
            day = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
            out[name] = day.timestamp()
    return out


def create_day_partitions_in(
    conn: Connection,
    *,
    table: str = "predictions",
    now: float | None = None,
    days_back: int = 0,
    days_ahead: int = DAYS_AHEAD,
) -> list[str]:
    """Create the missing day partitions from `days_back` days ago to `days_ahead` ahead.

    A day whose rows already sit in the default partition cannot get its own (PostgreSQL
    refuses); it is skipped and its rows stay there, deleted in batches when they age out.
    """
    today = day_start(time.time() if now is None else now)
    existing = day_partitions_in(conn, table)
    made = []
    for k in range(-days_back, days_ahead + 1):
        day = today + k * DAY_S
        name = partition_name(day)
        if name in existing:
            continue
        try:
            with conn.begin_nested():
                conn.execute(
                    text(
                        f"CREATE TABLE {name} PARTITION OF {table} "
                        f"FOR VALUES FROM ({day!r}) TO ({day + DAY_S!r})"
                    )
                )
        except Exception as error:  # the default partition holds rows of that day
            log.warning(
                "log partition %s not created (%s); its rows stay in the default", name, error
            )
            continue
        made.append(name)
    return made


# -- pruning --------------------------------------------------------------------------------


@dataclass
class PruneResult:
    cutoff: float
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_created: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    feedback_deleted: int = 0


def _active_starts(engine: Engine) -> list[float]:
    with engine.connect() as conn:
        return [
            float(t)
            for t in conn.execute(
                text("SELECT started_at FROM rollouts WHERE active_model IS NOT NULL")
            ).scalars()
        ]


def _delete_in_batches(engine: Engine, table: str, limit: float, batch: int) -> int:
    """Delete rows of `table` with ts < limit, `batch` at a time (oldest ids first)."""
    deleted = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(
                text(
                    f"DELETE FROM {table} WHERE id IN "
                    f"(SELECT id FROM {table} WHERE ts < :limit ORDER BY id LIMIT :batch)"
                ),
                {"limit": limit, "batch": batch},
            ).rowcount
        deleted += n
        if n < batch:
            return deleted


def prune(
    engine: Engine, retention_days: float, *, now: float | None = None, batch: int = 10_000
) -> PruneResult:
    """Remove log rows past retention, never one an active rollout reads (idempotent)."""
    now = time.time() if now is None else now
    result = PruneResult(cutoff(now, retention_days, _active_starts(engine)))
    with engine.begin() as conn:
        partitioned = is_partitioned(conn)
        if partitioned:
            result.partitions_created = create_day_partitions_in(conn, now=now)
            days = day_partitions_in(conn)
    if partitioned:
        for name in droppable(days, result.cutoff):
            try:
                with engine.begin() as conn:
                    # dropping a partition locks the whole log briefly: never queue the
                    # writers behind a long reader for it, try again next time instead
                    conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                result.partitions_dropped.append(name)
            except Exception as error:
                log.warning("log partition %s not dropped (%s); next run retries", name, error)
        result.rows_deleted = _delete_in_batches(engine, DEFAULT_PARTITION, result.cutoff, batch)
    else:
        result.rows_deleted = _delete_in_batches(engine, "predictions", result.cutoff, batch)
    result.feedback_deleted = _delete_in_batches(engine, "feedback", result.cutoff, batch)
    return result


class RetentionLoop:
    """Prunes every `interval_s` (the first run soon after start); run by the controller."""

    def __init__(self, engine: Engine, retention_days: float, interval_s: float = 3_600.0):
        self.engine = engine
        self.retention_days = retention_days
        self.interval_s = interval_s
        self._stop = asyncio.Event()

    async def run(self, first_delay_s: float = 5.0) -> None:
        delay = first_delay_s
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
            delay = self.interval_s
            try:
                result = await asyncio.to_thread(prune, self.engine, self.retention_days)
            except Exception:  # a failed pass must not stop the controller: retry later
                log.exception("log retention failed; next try in %.0f s", delay)
                continue
            if result.partitions_dropped or result.rows_deleted or result.feedback_deleted:
                log.info(
                    "log retention: dropped %s, deleted %d rows and %d feedback rows before %s",
                    result.partitions_dropped or "no partition",
                    result.rows_deleted,
                    result.feedback_deleted,
                    datetime.fromtimestamp(result.cutoff, UTC).isoformat(timespec="seconds"),
                )

    def stop(self) -> None:
        self._stop.set()
