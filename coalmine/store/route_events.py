"""Route changes pushed to every gateway replica: PostgreSQL LISTEN/NOTIFY.

Every write of a route (or of a version's URL) sends `NOTIFY coalmine_routes, '<model>'` in
the same transaction, so the notification is delivered exactly when the change commits and
never for a change rolled back. `RouteListener` holds one dedicated connection per gateway
process, LISTENs on the channel and calls back on each notification; on a dropped connection
it reconnects (with backoff) and calls back once more, since changes made while it was away
were never delivered. The gateway keeps polling as well: a missed notification costs one
poll interval, never a stale table.

SQLite has no notifications: `notify_in` does nothing there and gateways only poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text

__all__ = ["CHANNEL", "RouteListener", "notify_in", "supports_notify"]

log = logging.getLogger(__name__)

CHANNEL = "coalmine_routes"
APPLICATION_NAME = "coalmine-route-listener"  # how an operator finds these sessions
_RECONNECT_FIRST_S = 0.1
_RECONNECT_MAX_S = 5.0


def supports_notify(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def notify_in(conn: Connection, model: str) -> None:
    """Tell every listening gateway that `model`'s route changed, when `conn` commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:c, :m)"), {"c": CHANNEL, "m": model})


class RouteListener:
    """A thread LISTENing for route changes on its own connection; `on_change()` runs in it.

    `on_change` is called once per notification (and once after every (re)connect); it must
    be quick and must not raise (the gateway's sets an event its poller waits on).
    """

    def __init__(
        self, engine: Engine, on_change: Callable[[], None], *, check_s: float = 0.5
    ) -> None:
        if not supports_notify(engine):
            raise ValueError(f"{engine.dialect.name} has no LISTEN/NOTIFY")
        self._engine = engine
        self._on_change = on_change
        self._check_s = check_s  # how often the thread looks at the stop flag
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # set while LISTENing (tests wait on it)
        self.connects = 0  # successful (re)connections so far
        self.backend_pid: int | None = None

    def _connect(self) -> Any:
        import psycopg

        # the engine's own connect arguments (host, socket directory, password, SSL ...)
        args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        kwargs = dict(kwargs)
        kwargs.setdefault("application_name", APPLICATION_NAME)
        # a peer gone without a FIN (machine lost) is noticed by TCP keepalive, not never
        kwargs.setdefault("keepalives", 1)
        kwargs.setdefault("keepalives_idle", 10)
        kwargs.setdefault("keepalives_interval", 5)
        kwargs.setdefault("keepalives_count", 3)
        kwargs.setdefault("connect_timeout", 5)
        conn = psycopg.connect(*args, **kwargs, autocommit=True)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        delay = _RECONNECT_FIRST_S
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                self.backend_pid = conn.info.backend_pid
                self.connects += 1
                self.connected.set()
                delay = _RECONNECT_FIRST_S
                self._on_change()  # whatever changed while we were not listening
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=self._check_s):
                        self._on_change()
                    # notifies() returns quietly on timeout; a dead socket raises
            except Exception as error:
                if self._stop.is_set():
                    break
                log.warning(
                    "route listener connection lost (%s); polling until it reconnects in %.1fs",
                    error,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):  # already broken: nothing to release
                        conn.close()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="coalmine-route-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
