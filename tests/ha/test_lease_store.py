"""The lease's SQL (coalmine.rollout.leader) on a real SQLite file and a real PostgreSQL
server: it does what the pure rules say on replayed histories, expires by the database's
own clock, and a fenced transaction that lost the lease commits nothing at all."""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import Engine, func, select

from coalmine.config import parse_config
from coalmine.rollout import machine
from coalmine.rollout.leader import Leader, LeaseStore, NotLeader, fence_in
from coalmine.rollout.lease import Fence, LeaseRow, LeaseSettings, attempt, fenced
from coalmine.rollout.machine import Evidence, Tick
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRepository
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import rollout_events, webhook_deliveries

CONFIG = parse_config(
    {
        "models": [
            {
                "name": "iris",
                "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                "routing": {"stable": "v1"},
            }
        ]
    }
)


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_sql_does_what_the_rules_say_on_a_replayed_history(
    store_engine: Engine, seed: int
) -> None:
    clock = ManualClock()
    store = LeaseStore(store_engine, "replay", clock=clock)
    store.ensure()
    store.ensure()  # idempotent
    rng = random.Random(seed)
    model = LeaseRow(None, 0, 0.0)
    mine: dict[str, int | None] = dict.fromkeys("abc")
    db_mine: dict[str, int | None] = dict(mine)
    for _ in range(40):
        clock.t += rng.choice([0.0, 0.5, 1.0, 2.0, 3.5])
        who = rng.choice("abc")
        if rng.random() < 0.7:
            after = attempt(model, who, mine[who], clock.t, 3.0)
            got = store.attempt(who, db_mine[who], 3.0)
            assert got == (None if after is None else after.token)
            if after is not None:
                model = after
            mine[who] = db_mine[who] = got
            assert store.read() == model
        else:
            token = mine[who]
            if token is not None:
                fence = Fence("replay", who, token)
                assert store.check(fence) == fenced(model, fence, clock.t)


def test_a_lease_expires_by_the_databases_clock(store_engine: Engine) -> None:
    store = LeaseStore(store_engine, "clock")
    store.ensure()
    token = store.attempt("a", None, 0.4)
    assert token == 1
    assert store.attempt("b", None, 0.4) is None  # held
    assert store.check(Fence("clock", "a", 1))
    time.sleep(0.6)
    assert not store.check(Fence("clock", "a", 1))  # ran out: a write would be refused
    assert store.attempt("b", None, 5.0) == 2
    assert store.attempt("a", 1, 5.0) is None  # the old holder cannot renew its token
    assert not store.check(Fence("clock", "a", 1))
    row = store.read()
    assert row is not None and (row.holder, row.token) == ("b", 2)
    # each database stamps its own clock's epoch time
    assert abs(row.expires_at - (time.time() + 5.0)) < 2.0


def test_a_released_lease_is_taken_at_once_with_a_new_token(store_engine: Engine) -> None:
    a = Leader(store_engine, settings=LeaseSettings(ttl_s=30.0, renew_s=1.0), holder="a")
    b = Leader(store_engine, settings=LeaseSettings(ttl_s=30.0, renew_s=1.0), holder="b")
    assert a.try_lead() and a.token == 1
    assert not b.try_lead()
    a.release()
    assert not a.leading
    assert b.try_lead() and b.token == 2


def test_a_stale_fence_rolls_back_the_whole_transition(store_engine: Engine) -> None:
    """A leader that lost the lease: its transition, event row, route and webhook rows are
    all refused, and the next leader applies the same transition once."""
    RouteRepository(store_engine).seed_from_config(CONFIG)
    repo = RolloutRepository(store_engine)
    spec = parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [10, 100], "min_duration": 0, "min_samples": 0},
            "webhooks": [{"url": "http://127.0.0.1:9/hook"}],
        }
    )
    record = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    settings = LeaseSettings(ttl_s=30.0, renew_s=1.0)
    old = Leader(store_engine, settings=settings, holder="old")
    assert old.try_lead()
    stale = old.fence()
    assert stale is not None
    old.release()  # as if it ran out: another takes it
    new = Leader(store_engine, settings=settings, holder="new")
    assert new.try_lead()

    t = machine.step(record.state, Tick(Evidence()), time.time())
    assert t.changed
    with pytest.raises(NotLeader):
        repo.apply(record, t, fence=stale)
    assert repo.get(record.id).version == record.version
    assert _count(store_engine, rollout_events) == 1  # "created" only
    assert _count(store_engine, webhook_deliveries) == 0
    assert RouteRepository(store_engine).get("iris").canary is None  # type: ignore[union-attr]

    fence = new.fence()
    after = repo.apply(record, t, fence=fence)
    assert after is not None and after.state.canary_weight_bp == 1000
    events = repo.events(record.id)
    assert [(e["kind"], e["leader_token"]) for e in events] == [("created", None), ("advance", 2)]
    assert _count(store_engine, webhook_deliveries) == 1
    # the judgement and trip bookkeeping are fenced the same way
    with pytest.raises(NotLeader):
        repo.record_judgement(after, "pass", {"verdict": "pass"}, fence=stale)
    with pytest.raises(NotLeader):
        repo.acknowledge_trips(record.id, 5, fence=stale)
    assert repo.get(record.id).guard_seen_id == 0


@pytest.mark.postgres
def test_on_postgresql_a_take_waits_for_a_fenced_transaction_in_flight(
    postgres_server: str,
) -> None:
    """The row lock orders them: a take that finds the lease expired while the holder's
    fenced transaction is still open waits for that commit, then takes over after it."""
    from coalmine.store.engine import open_engine
    from tests.conftest import fresh_postgres_database

    engine = open_engine(fresh_postgres_database(postgres_server))
    try:
        store = LeaseStore(engine, "pg")
        store.ensure()
        assert store.attempt("a", None, 0.3) == 1
        order: list[str] = []
        taken: list[int | None] = []
        with engine.begin() as conn:
            fence_in(conn, Fence("pg", "a", 1))  # valid now; the row is locked until commit
            time.sleep(0.5)  # the lease runs out while the transaction is open
            thread = threading.Thread(target=lambda: taken.append(store.attempt("b", None, 5.0)))
            thread.start()
            time.sleep(0.3)
            assert taken == []  # waiting on the row lock
            order.append("commit")
        thread.join(10)
        order.append("taken")
        assert taken == [2] and order == ["commit", "taken"]
    finally:
        engine.dispose()


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)  # type: ignore[arg-type]
