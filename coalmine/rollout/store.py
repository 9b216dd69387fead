"""Persistence of rollouts: create, read, and apply a transition in ONE transaction.

`apply` writes the rollout's new state with a compare-and-swap on its `version`, the event
row (unique on rollout and version), the route change and the webhook deliveries (the
outbox, coalmine.rollout.outbox), all committed together. Two
controllers racing on one rollout therefore apply a transition exactly once, and a crash
leaves either all of it or none of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from coalmine.rollout.leader import bound_idle_in, fence_in
from coalmine.rollout.lease import Fence
from coalmine.rollout.machine import TERMINAL, Phase, RolloutState, Transition
from coalmine.rollout.outbox import enqueue_in, transition_payload
from coalmine.rollout.spec import RolloutSpec
from coalmine.rollout.weights import desired_route
from coalmine.store.routes import get_route_in, set_route_in, upsert_version_in
from coalmine.store.schema import (
    guard_trips,
    judgement_snapshots,
    predictions,
    rollout_events,
    rollouts,
)

__all__ = [
    "ModelRollback",
    "NotFound",
    "RolloutConflict",
    "RolloutRecord",
    "RolloutRepository",
]


class RolloutConflict(Exception):
    """The request conflicts with the current state (the API answers 409)."""


class NotFound(LookupError):
    """No such model or rollout (the API answers 404)."""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A stored rollout: the machine's state plus what only persistence needs."""

    state: RolloutState
    version: int
    candidate_url: str
    baseline_url: str | None
    guard_seen_id: int
    updated_at: float
    last_judgement: dict[str, Any] | None

    @property
    def id(self) -> int:
        return self.state.id

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        return {
            "id": s.id,
            "model": s.model,
            "candidate": s.candidate,
            "candidate_url": self.candidate_url,
            "baseline_url": self.baseline_url,
            "previous_stable": s.previous_stable,
            "phase": s.phase.value,
            "paused_phase": s.paused_phase.value if s.paused_phase else None,
            "step_index": s.step_index,
            "steps": s.spec.step_weights,
            "canary_weight": s.canary_weight_bp / 100,
            "mirror_share": s.mirror_bp / 100,
            "started_at": s.started_at,
            "step_started_at": s.step_started_at,
            "updated_at": self.updated_at,
            "ended_at": s.ended_at,
            "outcome": s.outcome,
            "reason": s.reason,
            "approved_step": s.approved_step,
            "version": self.version,
            "spec": s.spec.model_dump(mode="json"),
        }


def _record(row: Any) -> RolloutRecord:
    state = RolloutState(
        id=row.id,
        model=row.model,
        candidate=row.candidate,
        previous_stable=row.previous_stable,
        spec=RolloutSpec.model_validate_json(row.spec),
        phase=Phase(row.phase),
        started_at=row.started_at,
        step_started_at=row.step_started_at,
        step_index=row.step_index,
        canary_weight_bp=row.canary_weight_bp,
        mirror_bp=row.mirror_bp,
        paused_phase=Phase(row.paused_phase) if row.paused_phase else None,
        approved_step=row.approved_step,
        outcome=row.outcome,
        reason=row.reason,
        ended_at=row.ended_at,
    )
    return RolloutRecord(
        state=state,
        version=row.version,
        candidate_url=row.candidate_url,
        baseline_url=row.baseline_url,
        guard_seen_id=row.guard_seen_id,
        updated_at=row.updated_at,
        last_judgement=json.loads(row.last_judgement) if row.last_judgement else None,
    )


def _event_row(
    rollout_id: int,
    seq: int,
    now: float,
    before: RolloutState,
    t: Transition,
    fence: Fence | None = None,
) -> dict[str, Any]:
    return {
        "leader_token": None if fence is None else fence.token,
        "rollout_id": rollout_id,
        "seq": seq,
        "ts": now,
        "kind": t.kind,
        "from_phase": before.phase.value,
        "to_phase": t.state.phase.value,
        "step_index": t.state.step_index,
        "canary_weight_bp": t.state.canary_weight_bp,
        "mirror_bp": t.state.mirror_bp,
        "reason": t.reason,
        "evidence": t.evidence,
        "judgement": json.dumps(t.judgement, default=str) if t.judgement is not None else None,
    }


def _route_for(state: RolloutState) -> dict[str, Any]:
    return desired_route(
        state.phase.value,
        candidate=state.candidate,
        previous_stable=state.previous_stable,
        canary_weight_bp=state.canary_weight_bp,
        mirror_bp=state.mirror_bp,
        rollout_id=state.id,
        guard_failures=state.spec.canary.guard_failures,
        baseline_url=str(state.spec.baseline).rstrip("/") if state.spec.baseline else None,
        paired=state.spec.canary.paired,
    ).as_changes()


def _at_least(trip_id: int) -> Any:
    # the trips seen only ever grow: a writer with an older view never un-sees a trip
    return case((rollouts.c.guard_seen_id < trip_id, trip_id), else_=rollouts.c.guard_seen_id)


class RolloutRepository:
    """Rollouts in the store; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- creating -------------------------------------------------------------------------

    def create(
        self,
        model: str,
        candidate: str,
        candidate_url: str,
        spec: RolloutSpec,
        *,
        now: float | None = None,
        notes: list[str] | None = None,
    ) -> RolloutRecord:
        """Register the candidate version and a pending rollout of it.

        Raises NotFound for an unknown model and RolloutConflict when the model already has
        an active rollout or the candidate is the stable version.
        """
        now = time.time() if now is None else now
        baseline_url = str(spec.baseline).rstrip("/") if spec.baseline else None
        try:
            with self.engine.begin() as conn:
                route = get_route_in(conn, model, for_update=True)
                if route is None:
                    raise NotFound(f"unknown model {model!r}")
                active = self._active_in(conn, model)
                if active is not None:
                    raise RolloutConflict(self._active_message(active))
                if candidate == route.stable:
                    raise RolloutConflict(
                        f"{candidate!r} is already the stable version of {model!r}"
                    )
                upsert_version_in(conn, model, candidate, candidate_url.rstrip("/"))
                last_trip = conn.execute(
                    select(func.max(guard_trips.c.id)).where(guard_trips.c.model == model)
                ).scalar()
                result = conn.execute(
                    insert(rollouts).values(
                        model=model,
                        active_model=model,
                        candidate=candidate,
                        candidate_url=candidate_url.rstrip("/"),
                        baseline=None,
                        baseline_url=baseline_url,
                        previous_stable=route.stable,
                        spec=spec.model_dump_json(),
                        phase=Phase.PENDING.value,
                        step_index=0,
                        canary_weight_bp=0,
                        mirror_bp=0,
                        approved_step=-1,
                        started_at=now,
                        step_started_at=now,
                        updated_at=now,
                        guard_seen_id=int(last_trip or 0),
                        version=1,
                    )
                )
                key = result.inserted_primary_key
                assert key is not None
                rollout_id = int(key[0])
                conn.execute(
                    insert(rollout_events).values(
                        rollout_id=rollout_id,
                        seq=1,
                        ts=now,
                        kind="created",
                        from_phase=Phase.PENDING.value,
                        to_phase=Phase.PENDING.value,
                        step_index=0,
                        canary_weight_bp=0,
                        mirror_bp=0,
                        reason="; ".join(
                            [
                                f"rollout of {candidate} ({candidate_url}) over {route.stable}",
                                *(f"warning: {n}" for n in notes or []),
                            ]
                        ),
                    )
                )
                set_route_in(conn, model, rollout_id=rollout_id)
        except IntegrityError:
            # another process created one between our check and our insert
            with self.engine.connect() as conn:
                active = self._active_in(conn, model)
            raise RolloutConflict(
                self._active_message(active) if active else f"{model!r} has an active rollout"
            ) from None
        return self.get(rollout_id)

    @staticmethod
    def _active_message(active: RolloutRecord) -> str:
        s = active.state
        return (
            f"model {s.model!r} already has an active rollout: #{s.id} of {s.candidate} "
            f"({s.phase.value}); abort it or wait for it to end"
        )

    def _active_in(self, conn: Connection, model: str) -> RolloutRecord | None:
        row = conn.execute(select(rollouts).where(rollouts.c.active_model == model)).first()
        return None if row is None else _record(row)

    # -- reading --------------------------------------------------------------------------

    def get(self, rollout_id: int) -> RolloutRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout {rollout_id}")
        return _record(row)

    def active(self) -> list[RolloutRecord]:
        stmt = select(rollouts).where(rollouts.c.active_model.is_not(None)).order_by(rollouts.c.id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(stmt)]

    def active_for(self, model: str) -> RolloutRecord | None:
        with self.engine.connect() as conn:
            return self._active_in(conn, model)

    def recent(self, model: str | None = None, limit: int = 50) -> list[RolloutRecord]:
        stmt = select(rollouts).order_by(rollouts.c.id.desc()).limit(limit)
        if model is not None:
            stmt = stmt.where(rollouts.c.model == model)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(stmt)]

    def events(self, rollout_id: int, after_id: int = 0) -> list[dict[str, Any]]:
        stmt = (
            select(rollout_events)
            .where((rollout_events.c.rollout_id == rollout_id) & (rollout_events.c.id > after_id))
            .order_by(rollout_events.c.id)
        )
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt))
        out = []
        for r in rows:
            event = dict(r._mapping)
            event["judgement"] = json.loads(r.judgement) if r.judgement else None
            out.append(event)
        return out

    def candidate_samples(self, state: RolloutState, since: float) -> int:
        """Candidate calls logged for this rollout since `since` (canary or shadow role)."""
        stmt = select(func.count()).where(
            (predictions.c.model == state.model)
            & (predictions.c.version == state.candidate)
            & (predictions.c.ts >= since)
            & (predictions.c.role.in_(("canary", "shadow")))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def last_prediction_id(self, model: str) -> int:
        """The newest logged row of `model` (0 when none): where an incremental read starts."""
        with self.engine.connect() as conn:
            stmt = select(func.max(predictions.c.id)).where(predictions.c.model == model)
            return int(conn.execute(stmt).scalar() or 0)

    def split_counts(
        self, state: RolloutState, since: float, after_id: int
    ) -> tuple[int, list[tuple[int, int, int, float]]]:
        """Requests routed during this rollout since `since`, with row id above `after_id`:
        (the highest row id read, [(canary_weight_bp, candidate, others, others_rate)]),
        grouped by the split each request was routed under (logged with it): counts of
        logged rows, and the rate the others were logged at (rows / Σ sample_weight; stable
        rows may be sampled, `logging.stable_sample_rate_during_rollouts`).

        One routing decision is one request: the stable row of a request whose canary or
        baseline call failed over is not counted again; mirrored copies are not requests.
        """
        p, sibling = predictions, predictions.alias("sibling")
        with self.engine.connect() as conn:
            upto = conn.execute(select(func.max(p.c.id)).where(p.c.model == state.model)).scalar()
            if upto is None or int(upto) <= after_id:
                return after_id, []
            failed_over = (
                select(sibling.c.id)
                .where(
                    (sibling.c.request_id == p.c.request_id)
                    & (sibling.c.model == p.c.model)
                    & sibling.c.role.in_(("canary", "baseline"))
                )
                .exists()
            )
            stmt = (
                select(
                    p.c.canary_weight_bp,
                    p.c.role,
                    func.count(),
                    func.sum(func.coalesce(p.c.sample_weight, 1.0)),
                )
                .where(
                    (p.c.model == state.model)
                    & (p.c.id > after_id)
                    & (p.c.id <= int(upto))
                    & (p.c.rollout_id == state.id)
                    & (p.c.ts >= since)
                    & p.c.role.in_(("canary", "stable", "baseline"))
                    & ((p.c.role != "stable") | ~failed_over)
                )
                .group_by(p.c.canary_weight_bp, p.c.role)
            )
            groups: dict[int, list[float]] = {}
            for weight, role, n, calls in conn.execute(stmt):
                counts = groups.setdefault(int(weight or 0), [0, 0, 0.0])
                if role == "canary":
                    counts[0] += int(n)
                else:
                    counts[1] += int(n)
                    counts[2] += float(calls)
        return int(upto), [
            (w, int(c), int(o), int(o) / oc if oc else 1.0)
            for w, (c, o, oc) in sorted(groups.items())
        ]

    def trips_after(self, record: RolloutRecord) -> list[Any]:
        """Fast-guard trips against this rollout's candidate not yet acted upon."""
        s = record.state
        stmt = (
            select(guard_trips)
            .where(
                (guard_trips.c.model == s.model)
                & (guard_trips.c.id > record.guard_seen_id)
                & (guard_trips.c.version == s.candidate)
            )
            .order_by(guard_trips.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))

    # -- writing --------------------------------------------------------------------------

    def apply(
        self,
        record: RolloutRecord,
        transition: Transition,
        *,
        now: float | None = None,
        guard_seen_id: int | None = None,
        fence: Fence | None = None,
    ) -> RolloutRecord | None:
        """Persist `transition` of `record`; None when another writer got there first.

        With `fence` (a leading controller's), the same transaction checks the lease last
        and raises NotLeader, committing nothing, when it is no longer that controller's.
        Without (an operator's command through the API), the compare-and-swap alone
        guards it: it acts on the state it read, whoever leads."""
        now = time.time() if now is None else now
        s = transition.state
        ended = s.phase in TERMINAL
        values: dict[str, Any] = {
            "phase": s.phase.value,
            "active_model": None if ended else s.model,
            "step_index": s.step_index,
            "canary_weight_bp": s.canary_weight_bp,
            "mirror_bp": s.mirror_bp,
            "paused_phase": s.paused_phase.value if s.paused_phase else None,
            "approved_step": s.approved_step,
            "step_started_at": s.step_started_at,
            "updated_at": now,
            "ended_at": s.ended_at,
            "outcome": s.outcome,
            "reason": s.reason,
            "version": record.version + 1,
        }
        if transition.judgement is not None:
            values["last_judgement"] = json.dumps(transition.judgement, default=str)
        if guard_seen_id is not None:
            values["guard_seen_id"] = _at_least(guard_seen_id)
        with self.engine.begin() as conn:
            if fence is not None:
                bound_idle_in(conn, fence)
            result = conn.execute(
                update(rollouts)
                .where((rollouts.c.id == record.id) & (rollouts.c.version == record.version))
                .values(**values)
            )
            if result.rowcount != 1:
                return None  # lost the race: the transaction writes nothing else
            conn.execute(
                insert(rollout_events).values(
                    _event_row(record.id, record.version + 1, now, record.state, transition, fence)
                )
            )
            if "route" in transition.effects:
                set_route_in(conn, s.model, **_route_for(s))
            # the webhook outbox: committed with the transition or not at all
            payload = transition_payload(
                record.state, s, transition, seq=record.version + 1, ts=now
            )
            enqueue_in(conn, s.spec.webhooks, payload, now=now)
            if fence is not None:  # last: the lease row stays locked only until the commit
                fence_in(conn, fence)
        return self.get(record.id)

    def acknowledge_trips(self, rollout_id: int, up_to: int, *, fence: Fence | None = None) -> None:
        """Mark the fast-guard trips up to id `up_to` seen without a transition (the machine
        had nothing to do with them, e.g. the rollout was already rolling back), so they are
        not read as events again. No event row and no new version: nothing changed."""
        with self.engine.begin() as conn:
            conn.execute(
                update(rollouts)
                .where((rollouts.c.id == rollout_id) & (rollouts.c.guard_seen_id < up_to))
                .values(guard_seen_id=up_to)
            )
            if fence is not None:
                fence_in(conn, fence)

    def record_judgement(
        self,
        record: RolloutRecord,
        verdict: str,
        judgement: Mapping[str, Any],
        *,
        fence: Fence | None = None,
    ) -> None:
        """Keep the latest judgement (status, dashboards) and a snapshot for the report."""
        s = record.state
        text = json.dumps(judgement, default=str)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(rollouts).where(rollouts.c.id == s.id).values(last_judgement=text))
            conn.execute(
                insert(judgement_snapshots).values(
                    rollout_id=s.id,
                    ts=now,
                    phase=s.phase.value,
                    step_index=s.step_index,
                    canary_weight_bp=s.canary_weight_bp,
                    verdict=verdict,
                    judgement=text,
                )
            )
            if fence is not None:
                fence_in(conn, fence)

    def rollback_model(self, model: str, *, now: float | None = None) -> ModelRollback:
        """Restore the stable version a promotion replaced (`coalmine rollback MODEL`).

        A transition of the promoted rollout like any other: the route, the event row (kind
        `model_rollback`, a new seq) and the webhook deliveries commit together. The
        rollout stays `promoted` (that is what its rollout did); the controller then runs
        the transition listeners (the model registry moves its champion alias back).
        """
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            route = get_route_in(conn, model, for_update=True)
            if route is None:
                raise NotFound(f"unknown model {model!r}")
            active = self._active_in(conn, model)
            if active is not None:
                raise RolloutConflict(
                    self._active_message(active).replace("; abort it or wait", "; abort it")
                )
            row = conn.execute(
                select(rollouts)
                .where((rollouts.c.model == model) & (rollouts.c.phase == Phase.PROMOTED.value))
                .order_by(rollouts.c.id.desc())
                .limit(1)
            ).first()
            if row is None or row.candidate != route.stable:
                raise RolloutConflict(
                    f"nothing to roll back: the stable version {route.stable!r} of {model!r} "
                    "was not put there by a rollout"
                )
            before = _record(row)
            s = before.state
            set_route_in(
                conn,
                model,
                stable=s.previous_stable,
                canary=None,
                canary_weight_bp=0,
                shadow=None,
                mirror_bp=0,
                rollout_id=None,
            )
            reason = f"manual rollback of {model}: {s.candidate} -> {s.previous_stable}"
            # the route above is the effect; the rollout's own state does not change
            t = Transition(s, "model_rollback", reason, effects=("route", "notify"))
            seq = before.version + 1
            result = conn.execute(
                update(rollouts)
                .where((rollouts.c.id == s.id) & (rollouts.c.version == before.version))
                .values(version=seq, updated_at=now)
            )
            if result.rowcount != 1:  # rolled back by another writer meanwhile
                raise RolloutConflict(f"rollout {s.id} of {model!r} changed; try again")
            conn.execute(insert(rollout_events).values(_event_row(s.id, seq, now, s, t)))
            enqueue_in(conn, s.spec.webhooks, transition_payload(s, s, t, seq=seq, ts=now), now=now)
        return ModelRollback(before, self.get(s.id), t)


@dataclass(frozen=True, slots=True)
class ModelRollback:
    """What `coalmine rollback MODEL` did: the promoted rollout before and after, and the
    transition (kind `model_rollback`) its event row and webhooks carry."""

    before: RolloutRecord
    after: RolloutRecord
    transition: Transition

    def summary(self) -> dict[str, Any]:
        s = self.after.state
        return {
            "model": s.model,
            "stable": s.previous_stable,
            "replaced": s.candidate,
            "rollout_id": s.id,
            "reason": self.transition.reason,
            "seq": self.after.version,
        }
