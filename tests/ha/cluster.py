"""Pieces for the HA tests, on top of tests/replicas/harness.py (whose processes, config
writer and load balancer they reuse) and tests/rollout's traffic: a webhook receiver
counting deliveries by event, traffic that keeps the ids of answered requests, and reads of
the store's lease and event rows.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
from sqlalchemy import Engine, select

from coalmine.rollout.lease import LeaseRow
from coalmine.rollout.webhooks import DELIVERY_HEADER
from coalmine.store.schema import leases, rollout_events
from tests.replicas.harness import ControlPlane
from tests.rollout.conftest import IRIS_X, IRIS_Y, Traffic


@dataclass
class Delivery:
    delivery_id: str
    event: tuple[int, int]  # (rollout_id, seq): the event it reports
    kind: str


@dataclass
class HookReceiver:
    """A real HTTP webhook endpoint on loopback (its own thread): records every POST."""

    calls: list[Delivery] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> HookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.calls.append(
                        Delivery(
                            self.headers.get(DELIVERY_HEADER, ""),
                            (int(body["rollout_id"]), int(body["seq"])),
                            str(body["kind"]),
                        )
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def events(self) -> dict[tuple[int, int], set[str]]:
        """Event -> the distinct delivery ids it arrived under (receivers de-duplicate by
        that id: exactly once means one id per event)."""
        out: dict[tuple[int, int], set[str]] = {}
        with self._lock:
            for c in self.calls:
                out.setdefault(c.event, set()).add(c.delivery_id)
        return out

    def posts_per_delivery(self) -> Counter[str]:
        with self._lock:
            return Counter(c.delivery_id for c in self.calls)


def lease_row(engine: Engine, name: str = "controller") -> LeaseRow | None:
    with engine.connect() as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
    return None if row is None else LeaseRow(row.holder, int(row.token), float(row.expires_at))


def events(engine: Engine, rollout_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(rollout_events)
            .where(rollout_events.c.rollout_id == rollout_id)
            .order_by(rollout_events.c.seq)
        )
        return [dict(r._mapping) for r in rows]


def leader_of(engine: Engine, planes: Sequence[ControlPlane], timeout: float = 30) -> ControlPlane:
    """The controller process holding the lease (its holder id carries the pid)."""
    deadline = time.monotonic() + timeout
    while True:
        row = lease_row(engine)
        if row is not None and row.holder is not None:
            pid = int(row.holder.split(":")[1])
            for plane in planes:
                if plane.pid == pid:
                    return plane
        assert time.monotonic() < deadline, f"no controller leads: {row}"
        time.sleep(0.05)


def wait_for_token_above(engine: Engine, token: int, timeout: float = 30) -> LeaseRow:
    deadline = time.monotonic() + timeout
    while True:
        row = lease_row(engine)
        if row is not None and row.token > token:
            return row
        assert time.monotonic() < deadline, f"nobody took the lease over: {row}"
        time.sleep(0.02)


def pause(plane: ControlPlane) -> None:
    plane.process.send_signal(signal.SIGSTOP)


def resume(plane: ControlPlane) -> None:
    plane.process.send_signal(signal.SIGCONT)


def assert_exactly_once(
    engine: Engine, receiver: HookReceiver, rollout_id: int, kinds: Sequence[str]
) -> list[dict[str, Any]]:
    """Every transition of the rollout once, in seq order, with the kinds expected; every
    one of them delivered under exactly one delivery id; tokens only grow along the seqs."""
    rows = events(engine, rollout_id)
    assert [e["seq"] for e in rows] == list(range(1, len(rows) + 1))  # none skipped
    assert [e["kind"] for e in rows] == list(kinds), [e["kind"] for e in rows]
    by_leader = [e["leader_token"] for e in rows if e["leader_token"] is not None]
    assert by_leader == sorted(by_leader)  # never an older leader after a newer one
    delivered = {ev: ids for ev, ids in receiver.events().items() if ev[0] == rollout_id}
    expected = {(rollout_id, e["seq"]) for e in rows if e["kind"] != "created"}
    assert set(delivered) == expected  # none skipped, none made up
    assert all(len(ids) == 1 for ids in delivered.values()), delivered  # none duplicated
    return rows


class LabelledTraffic(Traffic):
    """tests/rollout's traffic (sticky users, late labels through /v1/feedback), keeping
    the request id of every request answered 200, to find each one's row in the log."""

    def __init__(self, url: str, rate: float = 40.0) -> None:
        self.answered: list[str] = []
        super().__init__(url, rate)

    async def _one(self, session: aiohttp.ClientSession, i: int, user: int) -> None:
        rid = uuid.uuid4().hex
        headers = {"X-Request-ID": rid, "X-User-Id": f"u{user}"}
        self.sent += 1
        try:
            async with session.post(
                f"{self.gateway_url}/v1/models/iris:predict",
                json={"instances": [list(IRIS_X[i])]},
                headers=headers,
            ) as resp:
                await resp.read()
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                version = resp.headers.get("X-Model-Version", "?")
                self.versions[version] = self.versions.get(version, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            self.statuses[0] = self.statuses.get(0, 0) + 1
            return
        if resp.status == 200:
            self.answered.append(rid)
            self._labels.append((time.monotonic() + 0.5, rid, int(IRIS_Y[i]), 0))
