"""Two controllers with leader leases on one store (SQLite file and PostgreSQL), in one
process: only the holder ticks and sends webhooks; when it stops, the other takes over
and finishes the same rollout, each transition and delivery once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Engine

from coalmine.rollout.controller import Controller
from coalmine.rollout.leader import Leader
from coalmine.rollout.lease import LeaseSettings
from coalmine.rollout.machine import Evidence
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.rollout.webhooks import WebhookSender
from coalmine.store.routes import RouteRepository
from tests.rollout.test_rollout_webhooks import CONFIG, Receiver

SETTINGS = LeaseSettings(ttl_s=1.0, renew_s=0.2, poll_s=0.1, safety_s=0.25)


class PassingJudge:
    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        return Evidence(samples=0, must_not_fail=1)

    def forget(self, rollout_id: int) -> None:
        pass


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def controller(engine: Engine, name: str) -> Controller:
    leader = Leader(engine, settings=SETTINGS, holder=name)
    sender = WebhookSender(engine, poll_s=0.05, backoff_s=0.05)
    return Controller(engine, PassingJudge(), sender=sender, tick_s=0.05, leader=leader)


async def until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_only_the_leader_acts_and_the_other_takes_over_when_it_stops(
    store_engine: Engine, receiver: Receiver
) -> None:
    RouteRepository(store_engine).seed_from_config(CONFIG)
    repo = RolloutRepository(store_engine)
    spec = parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [10, 20, 30, 40, 100], "min_duration": 0.3, "min_samples": 0},
            "interval": 0.1,
            "webhooks": [{"url": f"{receiver.url}/a"}],
        }
    )
    a, b = controller(store_engine, "a"), controller(store_engine, "b")
    runs = {"a": asyncio.create_task(a.run())}
    await until(lambda: a.leader is not None and a.leader.leading)
    runs["b"] = asyncio.create_task(b.run())
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    try:
        await until(lambda: repo.get(rec.id).state.step_index >= 1)
        assert b.leader is not None and not b.leader.leading
        assert b.sender.attempts_made == 0  # the follower sends nothing
        a.stop()  # a graceful stop releases the lease: b takes it at its next poll
        await runs.pop("a")
        await until(lambda: repo.get(rec.id).state.terminal)
        await until(lambda: len(receiver.ok()) == len(repo.events(rec.id)) - 1)
    finally:
        for ctl in (a, b):
            ctl.stop()
        await asyncio.gather(*runs.values())
    events = repo.events(rec.id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["kind"] for e in events][-2:] == ["promote", "promoted"]
    tokens = [e["leader_token"] for e in events[1:]]
    assert tokens == sorted(tokens) and set(tokens) == {1, 2}  # a, then b
    bodies = [json.loads(c.body) for c in receiver.ok()]
    assert sorted(b["seq"] for b in bodies) == [e["seq"] for e in events[1:]]
    assert len({c.delivery for c in receiver.ok()}) == len(bodies)  # each once
    assert a.sender.attempts_made + b.sender.attempts_made == len(bodies)


async def test_a_lone_controller_leads_at_once_and_a_restart_does_not_wait(
    store_engine: Engine,
) -> None:
    """The single-process case: the lease is taken before the first tick, and a graceful
    stop gives it back, so the next start leads at once too (no TTL to wait out)."""
    for name in ("first", "second"):
        ctl = Controller(
            store_engine,
            PassingJudge(),
            tick_s=0.05,
            leader=Leader(
                store_engine, settings=LeaseSettings(ttl_s=60.0, renew_s=5.0), holder=name
            ),
        )
        run = asyncio.create_task(ctl.run())
        try:
            await until(lambda c=ctl: c.leader is not None and c.leader.leading, timeout=5.0)
        finally:
            ctl.stop()
            await run


async def test_a_blocked_event_loop_does_not_cost_the_lease(store_engine: Engine) -> None:
    """Renewals run in a thread of their own: a controller whose event loop is stuck for
    longer than the TTL (a long synchronous step, a slow tick) still holds its lease."""
    leader = Leader(store_engine, settings=SETTINGS, holder="busy")
    ctl = Controller(store_engine, PassingJudge(), tick_s=0.05, leader=leader)
    run = asyncio.create_task(ctl.run())
    try:
        await until(lambda: leader.leading)
        token = leader.token
        time.sleep(2.5 * SETTINGS.ttl_s)  # blocks the loop itself
        other = Leader(store_engine, settings=SETTINGS, holder="other")
        assert not other.try_lead()  # never free in between: no takeover
        assert leader.leading and leader.token == token
    finally:
        ctl.stop()
        await run
