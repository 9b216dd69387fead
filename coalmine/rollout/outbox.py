"""The webhook outbox: deliveries written in the transition's own transaction.

`enqueue_in(conn, ...)` is called by `RolloutRepository.apply` inside the transaction that
writes the rollout's new state, so a transition that commits always has its deliveries
stored, and one that loses its compare-and-swap has none. A sender (coalmine.rollout.webhooks)
then works through the table with `Outbox`: it picks due rows, claims each with a
compare-and-set UPDATE (so two controllers on one store never send one row at the same
time), posts it and records the result. At-least-once: a sender killed after the POST but
before recording it leaves the row to be sent again once its lease expires; receivers
de-duplicate on the delivery id.

Rows of one (rollout, URL) go out in `seq` order: only the oldest pending row of each pair
is due, so a later transition never overtakes an earlier one that is backing off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from coalmine.rollout.leader import NotLeader, fence_in
from coalmine.rollout.lease import Fence
from coalmine.rollout.machine import RolloutState, Transition
from coalmine.rollout.spec import WebhookSpec
from coalmine.store.schema import webhook_deliveries as wd

__all__ = ["Outbox", "OutboxRow", "body_of", "enqueue_in", "transition_payload"]

PENDING, DELIVERED, REJECTED, FAILED = "pending", "delivered", "rejected", "failed"


def transition_payload(
    before: RolloutState, after: RolloutState, t: Transition, *, seq: int, ts: float
) -> dict[str, Any]:
    """The webhook body of one transition (`seq` is the rollout version it produced)."""
    return {
        "kind": t.kind,
        "rollout_id": after.id,
        "model": after.model,
        "candidate": after.candidate,
        # the stable version the candidate replaces (and that a `model_rollback` restored)
        "previous_stable": after.previous_stable,
        "from_phase": before.phase.value,
        "to_phase": after.phase.value,
        "step_index": after.step_index,
        "canary_weight": after.canary_weight_bp / 100,
        "mirror_share": after.mirror_bp / 100,
        "reason": t.reason,
        "evidence": t.evidence,
        "outcome": after.outcome,
        "alert": "alert" in t.effects,
        "seq": seq,
        "ts": ts,
        "judgement": t.judgement,
    }


def body_of(payload: dict[str, Any]) -> str:
    """The JSON text stored, signed and sent (compact; judgement values made JSON-safe)."""
    return json.dumps(payload, default=str, separators=(",", ":"))


def enqueue_in(
    conn: Connection,
    hooks: Sequence[WebhookSpec],
    payload: dict[str, Any],
    *,
    now: float,
) -> None:
    """One pending row per webhook, inside the caller's transaction."""
    if not hooks:
        return
    body = body_of(payload)
    conn.execute(
        insert(wd),
        [
            {
                "rollout_id": int(payload["rollout_id"]),
                "seq": int(payload["seq"]),
                "url": str(hook.url),
                "secret": hook.secret,
                "payload": body,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for hook in hooks
        ],
    )


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    rollout_id: int
    seq: int
    url: str
    secret: str | None
    payload: str
    attempts: int
    next_attempt_at: float

    @property
    def delivery_id(self) -> str:
        """Stable across retries and senders, so a receiver can drop a repeat."""
        return f"coalmine-{self.rollout_id}-{self.seq}-{self.id}"

    @property
    def kind(self) -> str:
        try:
            return str(json.loads(self.payload).get("kind", ""))
        except ValueError:
            return ""


class Outbox:
    """The sender's view of the table; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def due(self, now: float, limit: int) -> list[OutboxRow]:
        """Pending rows whose time has come and that head their (rollout, URL) queue."""
        # the head of each queue: one grouped pass over the pending rows (a correlated
        # "no earlier pending row" test would be quadratic in a backlog)
        heads = (
            select(func.min(wd.c.id))
            .where(wd.c.state == PENDING)
            .group_by(wd.c.rollout_id, wd.c.url)
        )
        stmt = (
            select(wd)
            .where((wd.c.state == PENDING) & (wd.c.next_attempt_at <= now) & wd.c.id.in_(heads))
            .order_by(wd.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                OutboxRow(
                    id=int(r.id),
                    rollout_id=int(r.rollout_id),
                    seq=int(r.seq),
                    url=r.url,
                    secret=r.secret,
                    payload=r.payload,
                    attempts=int(r.attempts),
                    next_attempt_at=float(r.next_attempt_at),
                )
                for r in conn.execute(stmt)
            ]

    def claim(self, row: OutboxRow, until: float, fence: Fence | None = None) -> bool:
        """Lease `row` until `until`; False when another sender claimed it first (CAS on
        the next_attempt_at this sender read) or, with `fence`, when the sender's
        controller no longer holds the leader lease (then nothing is claimed)."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(wd)
                    .where(
                        (wd.c.id == row.id)
                        & (wd.c.state == PENDING)
                        & (wd.c.next_attempt_at == row.next_attempt_at)
                    )
                    .values(next_attempt_at=until)
                )
                if result.rowcount == 1 and fence is not None:
                    fence_in(conn, fence)
        except NotLeader:
            return False
        return result.rowcount == 1

    def release(self, row_id: int, leased_until: float, now: float) -> None:
        """Give back a lease not used (a sender stopping mid-send): due again at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(wd)
                .where(
                    (wd.c.id == row_id)
                    & (wd.c.state == PENDING)
                    & (wd.c.next_attempt_at == leased_until)
                )
                .values(next_attempt_at=now)
            )

    def finish(self, row_id: int, state: str, now: float, error: str | None = None) -> None:
        """Record a final result: delivered, rejected or failed."""
        with self.engine.begin() as conn:
            conn.execute(
                update(wd)
                .where((wd.c.id == row_id) & (wd.c.state == PENDING))
                .values(
                    state=state,
                    attempts=wd.c.attempts + 1,
                    finished_at=now,
                    last_error=error,
                )
            )

    def retry_at(self, row_id: int, when: float, error: str) -> None:
        """Record a failed attempt and when to try again."""
        with self.engine.begin() as conn:
            conn.execute(
                update(wd)
                .where((wd.c.id == row_id) & (wd.c.state == PENDING))
                .values(attempts=wd.c.attempts + 1, next_attempt_at=when, last_error=error)
            )

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).where(wd.c.state == PENDING)).scalar() or 0
            )

    def prune(self, finished_before: float) -> int:
        """Delete finished deliveries (delivered, rejected, failed) older than the cutoff;
        pending rows are never pruned. Returns how many went."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(wd).where((wd.c.state != PENDING) & (wd.c.finished_at < finished_before))
            )
        return int(result.rowcount or 0)

    def rows(self, rollout_id: int | None = None) -> list[dict[str, Any]]:
        """Every delivery (of one rollout), oldest first: for status pages and tests."""
        stmt = select(wd).order_by(wd.c.id)
        if rollout_id is not None:
            stmt = stmt.where(wd.c.rollout_id == rollout_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
