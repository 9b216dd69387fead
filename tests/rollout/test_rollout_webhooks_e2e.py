"""Webhook durability end to end: a real `coalmine serve` (API + controller in their own
process) is SIGKILLed right after a transition while the receiver is down; once the
receiver is up and a new process starts, every transition is delivered, signed, each with
its own delivery id. No model traffic is needed: the rollout only moves by its first tick
and an operator's pause.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from coalmine import Client
from coalmine.rollout.webhooks import verify_signature
from tests.rollout.conftest import TOKEN, Coalmine
from tests.rollout.test_rollout_webhooks import Receiver

pytestmark = pytest.mark.slow

SECRET = "e2e-hook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outbox_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT seq, state, attempts FROM webhook_deliveries ORDER BY id"
        ).fetchall()


async def test_a_controller_killed_after_a_transition_still_delivers_it(tmp_path: Path) -> None:
    port = free_port()  # the receiver's; nothing listens there yet
    spec = {
        "shadow": {"enabled": False},
        "canary": {"steps": [10, 100], "min_duration": 600, "min_samples": 10**6},
        "webhooks": [{"url": f"http://127.0.0.1:{port}/hook/a", "secret": SECRET}],
    }
    cm = await asyncio.to_thread(Coalmine, tmp_path, "http://127.0.0.1:9/", True)
    receiver = Receiver()
    try:

        def start_and_pause() -> int:
            with Client(cm.api_url, TOKEN) as client:
                rollout_id = client.start_rollout("iris", "v2", "http://127.0.0.1:9/", spec).id
                deadline = time.monotonic() + 30
                while client.status(rollout_id)["phase"] != "canary":
                    assert time.monotonic() < deadline, "the rollout never reached canary"
                    time.sleep(0.05)
                client.pause(rollout_id, "e2e: hold it")
            cm.kill_control()  # right after the pause committed: no cleanup at all
            return int(rollout_id)

        rollout_id = await asyncio.to_thread(start_and_pause)
        # both transitions' deliveries are in the store, none delivered
        rows = outbox_rows(cm.db)
        assert [(seq, state) for seq, state, _ in rows] == [(2, "pending"), (3, "pending")]

        await receiver.start(port)
        await asyncio.to_thread(cm.restart_control)
        deadline = time.monotonic() + 60
        while len({c.delivery for c in receiver.ok()}) < 2:
            assert time.monotonic() < deadline, f"not delivered: {outbox_rows(cm.db)}"
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 10
        while any(state != "delivered" for _, state, _ in outbox_rows(cm.db)):
            assert time.monotonic() < deadline, f"not recorded: {outbox_rows(cm.db)}"
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(cm.stop)
        await receiver.stop()

    bodies = {c.delivery: json.loads(c.body) for c in receiver.ok()}
    assert sorted((b["seq"], b["kind"]) for b in bodies.values()) == [(2, "advance"), (3, "pause")]
    assert all(b["rollout_id"] == rollout_id for b in bodies.values())
    assert all(verify_signature(SECRET, c.body, c.signature) for c in receiver.ok())
    assert all(c.delivery.startswith("coalmine-") for c in receiver.ok())
