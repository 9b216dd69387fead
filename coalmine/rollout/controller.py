"""The rollout controller: the I/O loop around the pure state machine.

Every tick (default 0.25 s) it loads the active rollouts and, for each one: reads fast-guard
trips (-> GuardTrip), asks the Judge for evidence when the rollout's evaluation interval has
passed (-> Tick), calls `machine.step`, and applies the transition in ONE transaction
(state + event + route + webhook outbox rows, compare-and-swap on the rollout's version);
its WebhookSender delivers the outbox from its own task. All state is in the store, so a
controller killed at any moment resumes where the store says it was: step timers are
persisted timestamps, and a transition either committed entirely (with its webhook
deliveries, sent by whichever sender runs next) or not at all.

Operators' commands (pause, promote, ...) go through `command()`, the same apply path, so
they race safely with the loop.

High availability: with a `Leader` (coalmine.rollout.leader; `coalmine serve` always gives
one), any number of controllers share a store and only the holder of the leader lease
ticks, syncs traffic layers and sends webhooks. Everything a tick writes carries the
lease's fencing token and checks it in its own transaction, so a leader that lost the lease
without knowing it (paused, partitioned) commits nothing; its successor re-reads the store
and goes on from the last committed transition. Commands need no lease (any API replica
applies them, the compare-and-swap guards them); the leader sees them at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine

from coalmine.providers.sync import TrafficSync
from coalmine.rollout import machine, outbox
from coalmine.rollout.judge import Judge
from coalmine.rollout.leader import Leader, NotLeader
from coalmine.rollout.lease import Fence
from coalmine.rollout.machine import Event, Evidence, Phase, Tick, Transition
from coalmine.rollout.split_guard import SplitGuard
from coalmine.rollout.store import (
    ModelRollback,
    RolloutConflict,
    RolloutRecord,
    RolloutRepository,
)
from coalmine.rollout.webhooks import WebhookSender

__all__ = ["Controller", "transition_payload"]

log = logging.getLogger(__name__)

ROLLOUTS = Counter("coalmine_rollouts_total", "Rollouts ended, by outcome", ["outcome"])
TRANSITIONS = Counter(
    "coalmine_rollout_transitions_total", "Rollout transitions applied", ["model", "kind"]
)
PHASE = Gauge(
    "coalmine_rollout_phase", "1 for the current phase of the model's rollout", ["model", "phase"]
)
WEIGHT = Gauge("coalmine_rollout_canary_weight_percent", "Canary weight per model", ["model"])
MIRROR = Gauge("coalmine_rollout_mirror_percent", "Shadow mirror share per model", ["model"])
STEP_SECONDS = Histogram(
    "coalmine_rollout_step_seconds",
    "Time spent in a phase or canary step before leaving it",
    ["phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf")),
)
EVALUATION_ERRORS = Counter(
    "coalmine_rollout_evaluation_errors_total", "Judgements that raised", ["model"]
)

# phases in which the candidate is judged
_JUDGED = (Phase.SHADOW, Phase.CANARY)


def _warm_analysis() -> None:
    import coalmine.analysis.engine  # noqa: F401 - imported for its load time only


def transition_payload(
    before: RolloutRecord, after: RolloutRecord, t: Transition
) -> dict[str, Any]:
    """The webhook body for one transition (what the outbox row of `apply` holds)."""
    return outbox.transition_payload(
        before.state, after.state, t, seq=after.version, ts=after.updated_at
    )


class Controller:
    """Drives every active rollout in the store; run several with a `Leader` each for high
    availability (only the lease holder acts)."""

    def __init__(
        self,
        engine: Engine,
        judge: Judge,
        *,
        sender: WebhookSender | None = None,
        tick_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        traffic: TrafficSync | None = None,
        leader: Leader | None = None,
    ) -> None:
        self.repo = RolloutRepository(engine)
        # None: this controller acts alone, unfenced (tests, embedded use)
        self.leader = leader
        # the traffic layers outside Coalmine's gateway (e.g. nginx), kept on the stored route
        self.traffic = traffic
        self.judge = judge
        # delivers the webhook outbox that `repo.apply` fills, in its own task
        self.sender = sender or WebhookSender(engine)
        if leader is not None and self.sender.leader is None:
            self.sender.leader = leader  # only the leader sends webhooks
        self.tick_s = tick_s
        self.clock = clock
        # the sample-ratio guard, beside the judge: is the canary getting its share?
        self.split_guard = SplitGuard(self.repo)
        self._last_eval: dict[int, float] = {}
        self._stopping = asyncio.Event()
        # Called with every transition's payload (the webhook body); must not block.
        # The model-registry listener (coalmine.registry) is one.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until `stop()`; a failing tick is logged and the loop goes on. With a
        leader, the lease is kept in its own task and a tick runs only while it is held."""
        leader = self.leader
        if leader is not None:
            # the first take before the first tick: a lone controller leads at once
            with contextlib.suppress(Exception):
                await asyncio.to_thread(leader.try_lead)
            leader.start()
            # a follower loads the analysis stack now, not in its first tick as leader
            await asyncio.to_thread(_warm_analysis)
        self.sender.start()
        try:
            while not self._stopping.is_set():
                try:
                    await self.tick()
                except Exception:
                    log.exception("controller tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.tick_s)
        finally:
            await self.sender.close()
            if leader is not None:
                await asyncio.to_thread(leader.stop)
                try:  # a successor (or this controller restarted) need not wait the TTL
                    await asyncio.to_thread(leader.release)
                except Exception:
                    log.exception("controller: could not release the leader lease")

    def stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> list[Transition]:
        """One pass over the active rollouts; returns the transitions applied. Does
        nothing unless this controller leads (when it has a leader lease at all)."""
        applied: list[Transition] = []
        fence: Fence | None = None
        if self.leader is not None:
            fence = self.leader.fence()
            if fence is None:
                return applied
        records = await asyncio.to_thread(self.repo.active)
        for record in records:
            try:
                applied.extend(await self._drive(record, fence))
            except NotLeader:
                assert fence is not None and self.leader is not None
                self.leader.lost(fence)
                return applied  # the successor re-reads the store and goes on
            except Exception:
                log.exception("rollout %s: tick failed", record.id)
        if self.traffic is not None:
            await self.traffic.sync()
        return applied

    async def _drive(self, record: RolloutRecord, fence: Fence | None = None) -> list[Transition]:
        """Guard trips first, then the tick. An event the machine answers with no change
        never stops the tick: a trip recorded just after the rollout started rolling back
        (a gateway's stale view) used to end every pass here, so the tick that finishes the
        rollback never came."""
        applied: list[Transition] = []
        trips = await asyncio.to_thread(self.repo.trips_after, record)
        if trips:
            last = trips[-1]
            event: Event = machine.GuardTrip(f"{last.reason} (canary {last.version})")
            now = self.clock()
            t = machine.step(record.state, event, now)
            if t.changed:
                after = await self._commit(record, t, now, guard_seen_id=int(last.id), fence=fence)
                if after is None:
                    return applied  # lost a race: re-read next tick
                applied.append(t)
                record = after
            else:
                # every trip is acknowledged, acted upon or not, so it is read once
                log.info(
                    "rollout %s: %d fast-guard trip(s) up to #%s need nothing: %s",
                    record.id,
                    len(trips),
                    last.id,
                    t.reason,
                )
                await asyncio.to_thread(
                    self.repo.acknowledge_trips, record.id, int(last.id), fence=fence
                )
        tick = await self._tick_event(record, fence)
        if tick is None:
            return applied
        result = await self._apply(record, tick, fence)
        if result is not None:
            applied.append(result[1])
        return applied

    async def _tick_event(self, record: RolloutRecord, fence: Fence | None) -> Tick | None:
        s = record.state
        if s.phase not in _JUDGED:
            return Tick() if s.phase != Phase.PAUSED else None
        now = self.clock()
        if now - self._last_eval.get(s.id, 0.0) < s.spec.interval:
            return None
        self._last_eval[s.id] = now
        try:
            evidence = await asyncio.to_thread(self.judge.evaluate, record, now)
        except Exception as exc:
            EVALUATION_ERRORS.labels(s.model).inc()
            log.warning("rollout %s: evaluation failed: %s", s.id, exc)
            # still a tick: the step's max duration applies to a failing analysis too
            return Tick(Evidence(error=f"{type(exc).__name__}: {exc}"[:300]))
        if evidence.judgement is not None:
            verdict = str(evidence.judgement.get("verdict", "inconclusive"))
            await asyncio.to_thread(
                self.repo.record_judgement, record, verdict, evidence.judgement, fence=fence
            )
        try:
            mismatch = await asyncio.to_thread(self.split_guard.check, record)
        except Exception as exc:  # the guard never stops a judgement
            log.warning("rollout %s: sample-ratio check failed: %s", s.id, exc)
            mismatch = None
        if mismatch is not None:
            evidence = replace(evidence, split_mismatch=mismatch)
        return Tick(evidence)

    async def _apply(
        self, record: RolloutRecord, event: Event, fence: Fence | None
    ) -> tuple[RolloutRecord, Transition] | None:
        now = self.clock()
        t = machine.step(record.state, event, now)
        if not t.changed:
            return None
        after = await self._commit(record, t, now, fence=fence)
        return None if after is None else (after, t)

    async def _commit(
        self,
        record: RolloutRecord,
        t: Transition,
        now: float,
        *,
        guard_seen_id: int | None = None,
        fence: Fence | None = None,
    ) -> RolloutRecord | None:
        """Persist a changed transition; None when another writer changed the rollout.
        Raises NotLeader (nothing written) when `fence` is no longer the lease."""
        after = await asyncio.to_thread(
            self.repo.apply, record, t, now=now, guard_seen_id=guard_seen_id, fence=fence
        )
        if after is None:
            log.info("rollout %s: transition %s lost a race; re-read next tick", record.id, t.kind)
            return None
        self._observe(record, after, t, now)
        return after

    def _observe(
        self, before: RolloutRecord, after: RolloutRecord, t: Transition, now: float
    ) -> None:
        s = after.state
        log.info(
            "rollout %s %s: %s -> %s: %s",
            s.id,
            s.model,
            before.state.phase.value,
            s.phase.value,
            t.reason,
        )
        TRANSITIONS.labels(s.model, t.kind).inc()
        if (before.state.phase, before.state.step_index) != (s.phase, s.step_index):
            STEP_SECONDS.labels(before.state.phase.value).observe(
                max(0.0, now - before.state.step_started_at)
            )
        for phase in Phase:
            PHASE.labels(s.model, phase.value).set(1 if phase == s.phase else 0)
        WEIGHT.labels(s.model).set(s.canary_weight_bp / 100)
        MIRROR.labels(s.model).set(s.mirror_bp / 100)
        if s.terminal and not before.state.terminal:
            ROLLOUTS.labels(s.outcome or s.phase.value).inc()
            self.judge.forget(s.id)
            self.split_guard.forget(s.id)
            self._last_eval.pop(s.id, None)
        payload = transition_payload(before, after, t)
        for listen in self.listeners:
            try:
                listen(payload)
            except Exception:
                log.exception("transition listener failed for rollout %s", s.id)
        if s.spec.webhooks:
            self.sender.wake()  # its rows were committed with the transition

    # -- operators' commands ----------------------------------------------------------------

    async def command(self, rollout_id: int, event: Event) -> RolloutRecord:
        """Apply a manual event (pause, resume, promote, abort, approve) to one rollout.

        Retries a few times when the loop changed the rollout in between; raises
        InvalidTransition when the event makes no sense in the rollout's phase.
        """
        for _ in range(5):
            record = await asyncio.to_thread(self.repo.get, rollout_id)
            now = self.clock()
            t = machine.step(record.state, event, now)
            if not t.changed:
                return record
            after = await asyncio.to_thread(self.repo.apply, record, t, now=now)
            if after is not None:
                self._observe(record, after, t, now)
                if self.traffic is not None:
                    await self.traffic.sync([after.state.model])
                return after
        raise RolloutConflict(f"rollout {rollout_id} kept changing; try again")

    async def rollback_model(self, model: str) -> ModelRollback:
        """`coalmine rollback MODEL`: put back the stable version the last promotion
        replaced, as a transition like the others (event row and webhook deliveries in one
        transaction, then the transition listeners, e.g. the model registry's)."""
        now = self.clock()
        done = await asyncio.to_thread(self.repo.rollback_model, model, now=now)
        self._observe(done.before, done.after, done.transition, now)
        if self.traffic is not None:
            await self.traffic.sync([model])
        return done
