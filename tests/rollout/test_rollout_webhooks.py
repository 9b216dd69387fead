"""Webhooks through the outbox: rows written in the transition's transaction, delivered by
WebhookSender to a real aiohttp receiver on loopback, on a real SQLite file and a real
PostgreSQL server (`store_engine`): signed, retried with backoff, rejected on 4xx, failed
after max attempts, delivered after a restart, and sent once by two senders sharing a store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Engine

from coalmine.config import parse_config
from coalmine.rollout import machine
from coalmine.rollout.controller import Controller, transition_payload
from coalmine.rollout.machine import Abort, Evidence, Pause, Tick
from coalmine.rollout.outbox import Outbox, body_of, enqueue_in
from coalmine.rollout.spec import RolloutSpec, WebhookSpec, parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.rollout.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookSender,
    backoff_delay,
    sign,
    verify_signature,
)
from coalmine.store.routes import RouteRepository

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


@dataclass
class Receipt:
    t: float
    delivery: str
    body: bytes
    signature: str | None
    status: int
    path: str


@dataclass
class Receiver:
    """A webhook endpoint answering from `script` (then `default`), recording every call."""

    script: list[int] = field(default_factory=list)
    default: int = 204
    delay_s: float = 0.0
    gate: asyncio.Event | None = None  # when set, every request waits for it
    arrived: int = 0  # requests received, answered or not
    calls: list[Receipt] = field(default_factory=list)
    url: str = ""
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.arrived += 1
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()
        status = self.script.pop(0) if self.script else self.default
        self.calls.append(
            Receipt(
                time.monotonic(),
                request.headers.get(DELIVERY_HEADER, ""),
                body,
                request.headers.get(SIGNATURE_HEADER),
                status,
                request.path,
            )
        )
        return web.Response(status=status)

    def ok(self) -> list[Receipt]:
        return [c for c in self.calls if c.status < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def repo(store_engine: Engine) -> RolloutRepository:
    RouteRepository(store_engine).seed_from_config(CONFIG)
    return RolloutRepository(store_engine)


def spec_with(*hooks: dict[str, Any]) -> RolloutSpec:
    return parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [10, 100], "min_duration": 0, "min_samples": 0},
            "webhooks": list(hooks),
        }
    )


def advance(repo: RolloutRepository, record: RolloutRecord, now: float) -> RolloutRecord:
    """Apply the machine's next transition (a passing tick) and return the new record."""
    t = machine.step(record.state, Tick(Evidence(samples=10, must_not_fail=1)), now)
    after = repo.apply(record, t, now=now)
    assert after is not None
    return after


async def until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def rows_until(outbox: Outbox, states: Iterable[str], timeout: float = 20.0) -> list[Any]:
    """Outbox rows once every row is in one of `states`."""
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(outbox.rows)
        if rows and all(r["state"] in wanted for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox rows not {wanted}: {rows}")
        await asyncio.sleep(0.02)


def sender(engine: Engine, **kw: Any) -> WebhookSender:
    kw.setdefault("poll_s", 0.05)
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("timeout_s", 2.0)
    return WebhookSender(engine, **kw)


# -- the outbox rows: written with the transition, or not at all --------------------------


def test_a_transition_writes_one_delivery_per_webhook_in_its_transaction(
    repo: RolloutRepository, store_engine: Engine
) -> None:
    outbox = Outbox(store_engine)
    spec = spec_with(
        {"url": "http://127.0.0.1:9/hook/a", "secret": "k"}, {"url": "http://127.0.0.1:9/hook/b"}
    )
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec, now=100.0)
    assert outbox.rows() == []  # no webhook for `created`, as before the outbox

    t = machine.step(rec.state, Tick(), 101.0)
    after = repo.apply(rec, t, now=101.0)
    assert after is not None
    rows = outbox.rows(rec.id)
    assert [(r["url"], r["secret"], r["seq"], r["state"]) for r in rows] == [
        ("http://127.0.0.1:9/hook/a", "k", 2, "pending"),
        ("http://127.0.0.1:9/hook/b", None, 2, "pending"),
    ]
    # the stored body is exactly what the controller hands its listeners, as JSON
    expected = transition_payload(rec, after, t)
    assert all(r["payload"] == body_of(expected) for r in rows)
    assert json.loads(rows[0]["payload"])["kind"] == t.kind == "advance"
    assert rows[0]["next_attempt_at"] == 101.0 and rows[0]["attempts"] == 0

    # the same transition from the stale record loses its compare-and-swap: no delivery
    assert repo.apply(rec, t, now=101.5) is None
    assert len(outbox.rows(rec.id)) == 2

    # racing writers: one wins, and only its deliveries exist
    results: list[object] = []
    t2 = machine.step(after.state, Pause("hold"), 102.0)
    threads = [
        threading.Thread(target=lambda: results.append(repo.apply(after, t2, now=102.0)))
        for _ in range(4)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(r is not None for r in results) == 1
    assert [r["seq"] for r in outbox.rows(rec.id)] == [2, 2, 3, 3]


def test_a_rollout_without_webhooks_writes_no_delivery(
    repo: RolloutRepository, store_engine: Engine
) -> None:
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec_with(), now=1.0)
    advance(repo, rec, 2.0)
    assert Outbox(store_engine).rows() == []


# -- the sender --------------------------------------------------------------------------


async def test_signed_delivery_retried_with_backoff_then_delivered(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    receiver.script = [503, 503]  # down twice, then 204
    spec = spec_with({"url": f"{receiver.url}/a", "secret": "k"})
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    after = advance(repo, rec, time.time())
    s = sender(store_engine, backoff_s=0.2)
    s.start()
    try:
        rows = await rows_until(s.outbox, ["delivered"])
    finally:
        await s.close()
    [row] = rows
    assert row["attempts"] == 3 and row["finished_at"] is not None
    assert [c.status for c in receiver.calls] == [503, 503, 204]
    # one delivery id for every attempt: the receiver can drop a repeat
    assert len({c.delivery for c in receiver.calls}) == 1
    # exponential backoff between attempts: 0.2 s, then 0.4 s
    gaps = [b.t - a.t for a, b in itertools.pairwise(receiver.calls)]
    assert gaps[0] >= 0.2 * 0.9 and gaps[1] >= 0.4 * 0.9
    [ok] = receiver.ok()
    assert verify_signature("k", ok.body, ok.signature)
    assert not verify_signature("k", ok.body + b" ", ok.signature)
    assert json.loads(ok.body)["seq"] == after.version == 2
    assert json.loads(ok.body) == json.loads(row["payload"])


async def test_a_4xx_is_rejected_at_once_but_408_and_429_are_retried(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    receiver.script = [429, 408, 204, 400]
    spec = spec_with({"url": f"{receiver.url}/a"})
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    after = advance(repo, rec, time.time())  # retried twice, then delivered
    s = sender(store_engine)
    s.start()
    try:
        await rows_until(s.outbox, ["delivered"])
        advance(repo, after, time.time())  # the receiver rejects this one: no retry
        rows = await rows_until(s.outbox, ["delivered", "rejected"])
        await asyncio.sleep(0.3)  # several polls: still not retried
    finally:
        await s.close()
    assert [(r["state"], r["attempts"]) for r in rows] == [("delivered", 3), ("rejected", 1)]
    assert rows[1]["last_error"] == "HTTP 400"
    assert [c.status for c in receiver.calls] == [429, 408, 204, 400]


async def test_failed_after_max_attempts(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    receiver.default = 500
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec_with({"url": f"{receiver.url}/a"}))
    advance(repo, rec, time.time())
    s = sender(store_engine, max_attempts=3)
    s.start()
    try:
        [row] = await rows_until(s.outbox, ["failed"])
        await asyncio.sleep(0.3)
    finally:
        await s.close()
    assert row["attempts"] == 3 and row["last_error"] == "HTTP 500"
    assert len(receiver.calls) == 3


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


async def test_a_delivery_survives_a_restart_while_the_receiver_was_down(
    repo: RolloutRepository, store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the receiver's port, closed for now: connections are refused
    probe = await Receiver().start()
    port = probe.port
    await probe.stop()
    monkeypatch.setenv("COALMINE_WEBHOOK_SECRET", "from-env")
    spec = spec_with({"url": f"http://127.0.0.1:{port}/hook/a"})  # secret: from the env
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    advance(repo, rec, time.time())

    first = sender(store_engine, backoff_s=0.05, max_backoff_s=0.1)
    first.start()
    await until(lambda: first.outbox.rows()[0]["attempts"] >= 2)
    await first.close()  # the controller goes away with the delivery still pending
    [row] = first.outbox.rows()
    assert row["state"] == "pending" and "ClientConnectorError" in row["last_error"]

    up = await Receiver().start(port)
    second = sender(store_engine)  # a new process would start one like this
    second.start()
    try:
        [row] = await rows_until(second.outbox, ["delivered"])
    finally:
        await second.close()
        await up.stop()
    [got] = up.calls
    assert verify_signature("from-env", got.body, got.signature)
    assert got.delivery == f"coalmine-{rec.id}-2-{row['id']}"


async def test_two_senders_deliver_each_row_exactly_once_in_seq_order(
    store_engine: Engine, receiver: Receiver
) -> None:
    receiver.delay_s = 0.01  # widen the window in which both could grab a row
    hooks = [WebhookSpec(url=f"{receiver.url}/a"), WebhookSpec(url=f"{receiver.url}/b")]
    now = time.time()
    with store_engine.begin() as conn:
        for rollout_id, seq in itertools.product(range(1, 7), range(2, 7)):
            payload = {"kind": "advance", "rollout_id": rollout_id, "seq": seq}
            enqueue_in(conn, hooks, payload, now=now)
    expected = 6 * 5 * 2
    senders = [sender(store_engine, batch=4, poll_s=0.01) for _ in range(2)]
    for s in senders:
        s.start()
    try:
        rows = await rows_until(senders[0].outbox, ["delivered"], timeout=60)
    finally:
        for s in senders:
            await s.close()
    assert len(rows) == expected and all(r["attempts"] == 1 for r in rows)
    ids = [c.delivery for c in receiver.calls]
    assert len(ids) == expected and len(set(ids)) == expected  # each row once
    assert all(s.attempts_made > 0 for s in senders)  # both took part
    # per rollout and URL, deliveries arrived in seq order
    arrived: dict[tuple[int, str], list[int]] = {}
    for c in receiver.calls:
        body = json.loads(c.body)
        arrived.setdefault((body["rollout_id"], c.path), []).append(body["seq"])
    assert len(arrived) == 12 and all(v == [2, 3, 4, 5, 6] for v in arrived.values())


async def test_a_claimed_row_is_not_sent_by_another_sender_until_its_lease_ends(
    store_engine: Engine, receiver: Receiver
) -> None:
    with store_engine.begin() as conn:
        enqueue_in(
            conn,
            [WebhookSpec(url=f"{receiver.url}/a")],
            {"rollout_id": 1, "seq": 2},
            now=time.time(),
        )
    outbox = Outbox(store_engine)
    [row] = outbox.due(time.time(), 10)
    # a sender that claimed the row and then died (its lease is 0.5 s)
    assert outbox.claim(row, time.time() + 0.5)
    assert not outbox.claim(row, time.time() + 0.5)  # a second claim of the same read loses
    assert outbox.due(time.time(), 10) == []
    s = sender(store_engine)
    s.start()
    try:
        await asyncio.sleep(0.25)
        assert receiver.calls == []  # still leased
        await rows_until(outbox, ["delivered"])
    finally:
        await s.close()
    assert len(receiver.calls) == 1


def test_a_row_backing_off_holds_back_later_rows_of_its_queue_only(store_engine: Engine) -> None:
    a, b = (
        WebhookSpec(url="http://127.0.0.1:9/hook/a"),
        WebhookSpec(url="http://127.0.0.1:9/hook/b"),
    )
    with store_engine.begin() as conn:
        for seq in (2, 3, 4):
            enqueue_in(conn, [a, b], {"rollout_id": 1, "seq": seq}, now=10.0)
        enqueue_in(conn, [a], {"rollout_id": 2, "seq": 2}, now=10.0)
    outbox = Outbox(store_engine)
    heads = outbox.due(11.0, 10)
    assert [(r.rollout_id, r.url[-1], r.seq) for r in heads] == [
        (1, "a", 2),
        (1, "b", 2),
        (2, "a", 2),
    ]
    outbox.retry_at(heads[0].id, 100.0, "HTTP 503")  # rollout 1's seq 2 to /a backs off
    assert [(r.rollout_id, r.url[-1], r.seq) for r in outbox.due(11.0, 10)] == [
        (1, "b", 2),
        (2, "a", 2),
    ]
    outbox.finish(heads[0].id, "failed", 12.0, "gave up")  # once it is final, seq 3 is next
    assert (1, "a", 3) in [(r.rollout_id, r.url[-1], r.seq) for r in outbox.due(12.0, 10)]
    assert outbox.pending_count() == 6


# -- the controller ----------------------------------------------------------------------


class PassingJudge:
    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        return Evidence(samples=0, must_not_fail=1)

    def forget(self, rollout_id: int) -> None:
        pass


async def test_the_controller_loop_and_its_commands_deliver_through_the_outbox(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    spec = parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [10, 100], "min_duration": 60, "min_samples": 0},
            "webhooks": [{"url": f"{receiver.url}/a", "secret": "k"}],
        }
    )
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    ctl = Controller(store_engine, PassingJudge(), sender=sender(store_engine), tick_s=0.05)
    seen: list[dict[str, Any]] = []
    ctl.listeners.append(seen.append)
    loop = asyncio.create_task(ctl.run())
    try:
        await until(lambda: len(receiver.calls) == 1)  # pending -> canary 10%
        await ctl.command(rec.id, Abort("enough"))
        await until(lambda: len(receiver.calls) == 2)
    finally:
        ctl.stop()
        await loop
    kinds = [json.loads(c.body)["kind"] for c in receiver.calls]
    assert kinds == ["advance", "abort"]
    assert all(verify_signature("k", c.body, c.signature) for c in receiver.calls)
    # listeners get the same payloads, synchronously
    assert [json.loads(body_of(p)) for p in seen] == [json.loads(c.body) for c in receiver.calls]


async def test_coalmine_rollback_is_delivered_and_heard_like_any_transition(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    spec = parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [100], "min_duration": 0, "min_samples": 0},
            "webhooks": [{"url": f"{receiver.url}/a", "secret": "k"}],
        }
    )
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    ctl = Controller(store_engine, PassingJudge(), sender=sender(store_engine), tick_s=0.05)
    seen: list[dict[str, Any]] = []
    ctl.listeners.append(seen.append)
    loop = asyncio.create_task(ctl.run())
    try:
        await until(lambda: repo.get(rec.id).state.terminal)
        await until(lambda: len(receiver.calls) == 3)  # advance, promote, promoted
        done = await ctl.rollback_model("iris")
        await until(lambda: len(receiver.calls) == 4)
    finally:
        ctl.stop()
        await loop
    body = json.loads(receiver.calls[-1].body)
    assert body["kind"] == "model_rollback" and body["seq"] == done.after.version
    assert (body["candidate"], body["previous_stable"]) == ("v2", "v1")
    assert verify_signature("k", receiver.calls[-1].body, receiver.calls[-1].signature)
    assert seen[-1]["kind"] == "model_rollback"  # the listeners heard it too
    events = repo.events(rec.id)
    assert events[-1]["kind"] == "model_rollback" and events[-1]["seq"] == body["seq"]
    assert RouteRepository(store_engine).get("iris").stable == "v1"  # type: ignore[union-attr]


def test_signature_format() -> None:
    assert sign("s", b"{}").startswith("sha256=") and len(sign("s", b"{}")) == 7 + 64
    assert not verify_signature("s", b"{}", None)


async def test_a_hanging_receiver_never_holds_up_the_controller(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    receiver.gate = asyncio.Event()  # the receiver takes every request and answers nothing
    spec = spec_with({"url": f"{receiver.url}/a"})
    rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec)
    ctl = Controller(
        store_engine, PassingJudge(), sender=sender(store_engine, timeout_s=30), tick_s=0.05
    )
    loop = asyncio.create_task(ctl.run())
    try:
        await until(lambda: receiver.arrived == 1)
        # the first delivery is in flight and unanswered; the controller still transitions
        # and operators' commands still complete
        paused = await ctl.command(rec.id, Pause("hold"))
        aborted = await ctl.command(rec.id, Abort("enough"))
        assert (paused.state.phase.value, aborted.state.phase.value) == ("paused", "aborted")
        await asyncio.sleep(0.2)  # several sender polls
        assert receiver.calls == []  # nothing answered yet
        assert receiver.arrived == 1  # and the later transitions wait behind the first
        receiver.gate.set()
        await until(lambda: len(receiver.calls) == 3)
    finally:
        receiver.gate.set()
        ctl.stop()
        await loop
    assert [json.loads(c.body)["seq"] for c in receiver.calls] == [2, 3, 4]


async def test_finished_deliveries_are_pruned_after_the_retention_pending_never(
    repo: RolloutRepository, store_engine: Engine, receiver: Receiver
) -> None:
    receiver.default = 200
    rec = repo.create(
        "iris", "v2", "http://127.0.0.1:10/",
        spec_with({"url": f"{receiver.url}/a"}, {"url": "http://127.0.0.1:9/closed"}),
    )  # fmt: skip
    advance(repo, rec, time.time())
    s = sender(store_engine, max_attempts=50, backoff_s=30.0)
    s.start()
    try:
        await until(lambda: len(receiver.calls) == 1)
        await asyncio.sleep(0.2)
    finally:
        await s.close()
    states = sorted(r["state"] for r in s.outbox.rows())
    assert states == ["delivered", "pending"]  # the closed port is backing off
    assert s.outbox.prune(time.time() - 3600) == 0  # finished just now: kept
    assert s.outbox.prune(time.time() + 1) == 1
    assert [r["state"] for r in s.outbox.rows()] == ["pending"]
