"""The leader lease's I/O: the SQL of coalmine.rollout.lease's rules, and `Leader`, which
keeps one controller's lease taken and renewed in its own task.

Each rule is ONE conditional UPDATE on the lease's row, so the database serialises them:
on PostgreSQL the row lock orders a take against a renewal or a fenced transaction still
running (the take waits for its commit, then re-reads the row); on SQLite the database's
write lock does. Times are the database's clock (`clock_timestamp()` on PostgreSQL,
`julianday('now')` on SQLite), never a controller's.

`fence_in(conn, fence)` is what a leader's write adds to its own transaction: an UPDATE of
the lease row matching its holder and token and an unexpired expiry. It matches nothing
once another controller took the lease (the token grew) or the lease ran out, and then it
raises `NotLeader`, so the caller's transaction — transition, event row, route, webhook
outbox rows — rolls back whole. On PostgreSQL the fenced transaction also ends itself if
it sits idle longer than the lease (a leader stopped mid-transaction must not keep its row
locks while its successor waits).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    and_,
    bindparam,
    case,
    cast,
    extract,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from coalmine.rollout.lease import Fence, LeaseRow, LeaseSettings, local_deadline
from coalmine.store.schema import leases

__all__ = ["CONTROLLER_LEASE", "Leader", "LeaseStore", "NotLeader", "bound_idle_in", "fence_in"]

log = logging.getLogger(__name__)

CONTROLLER_LEASE = "controller"

LEADING = Gauge("coalmine_controller_leader", "1 while this controller holds the leader lease")
TAKEOVERS = Counter("coalmine_controller_lease_taken_total", "Times this controller took the lease")
FENCED = Counter(
    "coalmine_controller_fenced_writes_total",
    "Writes refused because this controller no longer held the lease (nothing was committed)",
)


class NotLeader(Exception):
    """A fenced write found the lease taken or expired; its transaction committed nothing."""


def _now(conn: Connection, clock: Callable[[], float] | None) -> ColumnElement[float]:
    """The database's time in epoch seconds, as an SQL expression (a bound value when a
    test gives its own clock)."""
    if clock is not None:
        return bindparam("now", clock(), type_=Float)
    name = conn.dialect.name
    if name == "postgresql":
        return cast(extract("epoch", func.clock_timestamp()), Float)
    if name == "sqlite":
        return (func.julianday("now") - 2440587.5) * 86400.0
    raise ValueError(f"store.url: the leader lease needs PostgreSQL or SQLite, not {name}")


def fence_in(conn: Connection, fence: Fence, *, clock: Callable[[], float] | None = None) -> None:
    """Inside the caller's transaction: raise NotLeader unless `fence` is still the lease.
    Call it last, just before the commit, so the lease row is locked only briefly."""
    result = conn.execute(
        update(leases)
        .where(
            (leases.c.name == fence.name)
            & (leases.c.holder == fence.holder)
            & (leases.c.token == fence.token)
            & (leases.c.expires_at > _now(conn, clock))
        )
        .values(token=leases.c.token)
    )
    if result.rowcount != 1:
        FENCED.inc()
        raise NotLeader(f"lease {fence.name!r}: token {fence.token} of {fence.holder} is stale")


def bound_idle_in(conn: Connection, fence: Fence) -> None:
    """PostgreSQL: end this transaction if it idles longer than the lease (a SIGSTOPped
    leader must not hold row locks its successor waits on). Call it first."""
    if conn.dialect.name == "postgresql":
        ms = max(1000, int(fence.ttl_s * 1000))
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")


class LeaseStore:
    """The `leases` row called `name`: take, renew, release, read (one statement each)."""

    def __init__(
        self,
        engine: Engine,
        name: str = CONTROLLER_LEASE,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.clock = clock  # None: the database's clock (tests pass one to replay a history)

    def ensure(self) -> None:
        """Create the row (never taken) if missing; racing creators are fine."""
        with self.engine.connect() as conn:
            exists = conn.execute(select(leases.c.name).where(leases.c.name == self.name)).first()
        if exists is not None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(leases).values(name=self.name, holder=None, token=0, expires_at=0.0)
                )
        except IntegrityError:
            pass  # another controller created it first

    def attempt(self, me: str, mine: int | None, ttl_s: float) -> int | None:
        """Take or renew (lease.attempt as one UPDATE); the token held after, or None."""
        t = leases.c
        with self.engine.begin() as conn:
            now = _now(conn, self.clock)
            renewing = (t.holder == me) & (t.token == (-1 if mine is None else mine))
            result = conn.execute(
                update(leases)
                .where((t.name == self.name) & or_(renewing, t.expires_at <= now))
                .values(
                    holder=me,
                    token=case((renewing, t.token), else_=t.token + 1),
                    expires_at=now + ttl_s,
                )
            )
            if result.rowcount != 1:
                return None
            token = conn.execute(select(t.token).where(t.name == self.name)).scalar_one()
        return int(token)

    def check(self, fence: Fence) -> bool:
        """Would a write carrying `fence` commit now? (fence_in in its own transaction)"""
        try:
            with self.engine.begin() as conn:
                fence_in(conn, fence, clock=self.clock)
        except NotLeader:
            return False
        return True

    def release(self, fence: Fence) -> None:
        """End our lease now (a graceful stop), so a successor need not wait for the TTL."""
        t = leases.c
        with self.engine.begin() as conn:
            conn.execute(
                update(leases)
                .where(and_(t.name == fence.name, t.holder == fence.holder, t.token == fence.token))
                .values(expires_at=0.0)
            )

    def read(self) -> LeaseRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leases).where(leases.c.name == self.name)).first()
        if row is None:
            return None
        return LeaseRow(row.holder, int(row.token), float(row.expires_at))


class Leader:
    """One controller's side of the lease. `start()` takes it when free and renews it while
    held; `fence()` is the Fence to carry while this controller believes it leads."""

    def __init__(
        self,
        engine: Engine,
        *,
        settings: LeaseSettings | None = None,
        name: str = CONTROLLER_LEASE,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = LeaseStore(engine, name)
        self.settings = settings or LeaseSettings()
        # unique per process start: a restarted controller is a new holder
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.monotonic = monotonic
        self._held: tuple[int, float] | None = None  # (token, believed until), swapped whole
        self._ensured = False
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def token(self) -> int | None:
        held = self._held
        return None if held is None else held[0]

    def fence(self) -> Fence | None:
        """The fence to write with, or None when this controller does not (or no longer
        surely) lead: its local deadline passed."""
        held = self._held
        if held is None or self.monotonic() >= held[1]:
            return None
        return Fence(self.store.name, self.holder, held[0], self.settings.ttl_s)

    @property
    def leading(self) -> bool:
        return self.fence() is not None

    def try_lead(self) -> bool:
        """One take-or-renew; True when this controller leads after it."""
        if not self._ensured:
            self.store.ensure()
            self._ensured = True
        held = self._held
        mine = None if held is None else held[0]
        sent_at = self.monotonic()  # before the statement: the local belief ends first
        token = self.store.attempt(self.holder, mine, self.settings.ttl_s)
        if token is None:
            if held is not None:
                log.warning("controller %s: lost the leader lease (token %s)", self.holder, mine)
            self._held = None
            LEADING.set(0)
            return False
        if token != mine:
            TAKEOVERS.inc()
            log.info("controller %s: leading with lease token %d", self.holder, token)
        self._held = (token, local_deadline(sent_at, self.settings))
        LEADING.set(1)
        return True

    def lost(self, fence: Fence) -> None:
        """A write carrying `fence` was refused: stop believing we lead on that token."""
        held = self._held
        if held is not None and held[0] == fence.token:
            self._held = None
            LEADING.set(0)
        log.warning(
            "controller %s: fenced out (lease token %d is stale); nothing was written",
            self.holder,
            fence.token,
        )

    def start(self) -> None:
        """Take or renew in a thread of its own until `stop()`: every renew_s while leading,
        every poll_s not. Not an asyncio task: a busy event loop or a full thread pool (a
        long judgement) must never delay a renewal past the lease."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="coalmine-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (blocks until the thread ends; the lease itself is kept)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                leading = self.try_lead()
            except Exception:  # the store is unreachable: our local deadline runs out alone
                log.exception("controller %s: lease attempt failed", self.holder)
                leading = False
            self._stopping.wait(self.settings.renew_s if leading else self.settings.poll_s)

    def release(self) -> None:
        """Give the lease up (graceful stop): a successor takes it at its next poll."""
        held, self._held = self._held, None
        LEADING.set(0)
        if held is not None:  # past our local deadline the row may still be ours: end it
            self.store.release(Fence(self.store.name, self.holder, held[0], self.settings.ttl_s))
