"""Route changes pushed over PostgreSQL LISTEN/NOTIFY (the gateway replicas' fast path), with
the listener reconnecting after its connection is killed and polling as the fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from coalmine.config import parse_config
from coalmine.gateway.guard import FastGuard
from coalmine.gateway.table import RouteTable
from coalmine.store.engine import open_engine
from coalmine.store.route_events import APPLICATION_NAME, RouteListener, supports_notify
from coalmine.store.routes import RouteRepository, set_route_in
from tests.conftest import fresh_postgres_database

CONFIG = parse_config(
    {
        "gateway": {"routing_poll_s": 1.0},
        "models": [
            {
                "name": "iris",
                "versions": [
                    {"name": "v1", "url": "http://127.0.0.1:9001"},
                    {"name": "v2", "url": "http://127.0.0.1:9002"},
                ],
                "routing": {"stable": "v1", "canary": "v2", "canary_weight": 0},
            }
        ],
    }
)


@pytest.fixture
def pg_engine(postgres_server: str) -> Iterator[Engine]:
    engine = open_engine(fresh_postgres_database(postgres_server))
    RouteRepository(engine).seed_from_config(CONFIG)
    try:
        yield engine
    finally:
        engine.dispose()


class Calls:
    def __init__(self) -> None:
        self.n = 0
        self.changed = threading.Condition()

    def __call__(self) -> None:
        with self.changed:
            self.n += 1
            self.changed.notify_all()

    def wait_above(self, n: int, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.n > n, timeout)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def kill_listeners(engine: Engine) -> int:
    """Terminate every route-listener session on the server (a dropped connection)."""
    with engine.begin() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            ).all()
        )


@pytest.mark.postgres
def test_a_committed_route_change_notifies_and_a_rolled_back_one_does_not(
    pg_engine: Engine,
) -> None:
    assert supports_notify(pg_engine)
    calls = Calls()
    listener = RouteListener(pg_engine, calls, check_s=0.1)
    listener.start()
    try:
        assert listener.connected.wait(5)
        assert calls.wait_above(0)  # the (re)connect call: catch up on anything missed
        settled = calls.n

        class Abandon(Exception):
            pass

        with pytest.raises(Abandon), pg_engine.begin() as conn:
            set_route_in(conn, "iris", canary_weight_bp=500)
            raise Abandon
        assert not calls.wait_above(settled, timeout=0.5)

        with pg_engine.begin() as conn:
            set_route_in(conn, "iris", canary_weight_bp=700)
            # not delivered before the transaction commits
            assert not calls.wait_above(settled, timeout=0.3)
        assert calls.wait_above(settled, timeout=2)
    finally:
        listener.stop()


@pytest.mark.postgres
def test_the_listener_reconnects_after_its_connection_is_killed(pg_engine: Engine) -> None:
    calls = Calls()
    listener = RouteListener(pg_engine, calls, check_s=0.1)
    listener.start()
    try:
        assert listener.connected.wait(5)
        first_pid = listener.backend_pid
        assert kill_listeners(pg_engine) == 1
        assert wait_for(lambda: listener.connects == 2 and listener.connected.is_set())
        assert listener.backend_pid != first_pid
        settled = calls.n
        RouteRepository(pg_engine).set_route("iris", canary_weight_bp=900)
        assert calls.wait_above(settled, timeout=2)
    finally:
        listener.stop()
    assert not listener.connected.is_set()


def _table(engine: Engine, poll_s: float) -> RouteTable:
    table = RouteTable(RouteRepository(engine), CONFIG, FastGuard(5))
    table.poll_s = poll_s
    table.refresh()
    return table


def weight(table: RouteTable) -> int:
    return table.routes["iris"].weight_bp


@pytest.mark.postgres
def test_the_table_reloads_on_a_notification_long_before_its_next_poll(
    pg_engine: Engine,
) -> None:
    table = _table(pg_engine, poll_s=60.0)  # polling alone would take a minute
    assert table.listener is not None
    table.start()
    try:
        assert table.listener.connected.wait(5)
        time.sleep(0.2)  # the connect-time reload has run
        RouteRepository(pg_engine).set_route("iris", canary_weight_bp=2500)
        assert wait_for(lambda: weight(table) == 2500, timeout=2)
        # after the listener's connection dies, the reconnect brings it back on its own
        kill_listeners(pg_engine)
        assert wait_for(lambda: table.listener is not None and table.listener.connects == 2)
        RouteRepository(pg_engine).set_route("iris", canary_weight_bp=4000)
        assert wait_for(lambda: weight(table) == 4000, timeout=2)
    finally:
        table.stop()


@pytest.mark.postgres
def test_polling_still_applies_a_change_no_notification_announced(pg_engine: Engine) -> None:
    table = _table(pg_engine, poll_s=0.2)
    assert table.listener is not None
    table.listener = None  # as if every notification were lost
    table.start()
    try:
        RouteRepository(pg_engine).set_route("iris", canary_weight_bp=3000)
        assert wait_for(lambda: weight(table) == 3000, timeout=3)
    finally:
        table.stop()


def test_sqlite_tables_have_no_listener_and_poll(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        RouteRepository(engine).seed_from_config(CONFIG)
        table = _table(engine, poll_s=0.1)
        assert table.listener is None
        table.start()
        try:
            RouteRepository(engine).set_route("iris", canary_weight_bp=100)
            assert wait_for(lambda: weight(table) == 100, timeout=3)
        finally:
            table.stop()
    finally:
        engine.dispose()
