"""The rollout state machine as one pure function: `step(state, event, now) -> Transition`.

No I/O here. The controller loads a rollout, asks the analysis engine for evidence, calls
`step`, and applies the transition (new state, event row and route change in one
transaction). Everything the machine decides on is in its arguments, so every path is
tested with literal inputs.

    pending -> shadow -> canary(0..n-1) -> promoting -> promoted
         \\________\\________\\_______________-> rolling_back -> rolled_back
    paused: held at the current weights until resume, promote or abort
    aborted: stopped by a person; traffic back on the previous stable
    completed: a shadow-only rollout that passed; routes unchanged
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from coalmine.rollout.spec import RolloutSpec
from coalmine.rollout.weights import mirror_bp, step_weights_bp

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Abort",
    "Approve",
    "Event",
    "Evidence",
    "GuardTrip",
    "InvalidTransition",
    "Pause",
    "Phase",
    "Promote",
    "Resume",
    "RolloutState",
    "Tick",
    "Transition",
    "awaiting_approval",
    "step",
    "waiting_for",
]


class Phase(StrEnum):
    """Where a rollout is. Terminal phases never change again."""

    PENDING = "pending"  # accepted; no traffic change yet (waits for the first tick or a gate)
    SHADOW = "shadow"  # the candidate gets a mirror of production; its answers reach nobody
    CANARY = "canary"  # the candidate serves steps[step_index] of live traffic
    PROMOTING = "promoting"  # promotion decided; the next tick makes the candidate stable
    PROMOTED = "promoted"  # terminal: candidate is stable at 100%, old stable kept as previous
    ROLLING_BACK = "rolling_back"  # failure decided; candidate already has no traffic
    ROLLED_BACK = "rolled_back"  # terminal: failed; the previous stable serves everything
    PAUSED = "paused"  # held at its weights (by a person, a FAIL with on_failure: pause, a hold)
    ABORTED = "aborted"  # terminal: stopped by a person; previous stable serves everything
    COMPLETED = "completed"  # terminal: a shadow-only rollout passed; routes unchanged


TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.COMPLETED})
ACTIVE = frozenset(set(Phase) - TERMINAL)
OUTCOME = {
    Phase.PROMOTED: "promoted",
    Phase.ROLLED_BACK: "rolled_back",
    Phase.ABORTED: "aborted",
    Phase.COMPLETED: "completed",
}


class InvalidTransition(ValueError):
    """A manual operation that makes no sense in the rollout's phase (API answers 409)."""


@dataclass(frozen=True, slots=True)
class RolloutState:
    """A rollout as the machine sees it (the persisted row, with its spec parsed)."""

    id: int
    model: str
    candidate: str
    previous_stable: str
    spec: RolloutSpec
    phase: Phase
    started_at: float
    step_started_at: float
    step_index: int = 0
    canary_weight_bp: int = 0
    mirror_bp: int = 0
    paused_phase: Phase | None = None
    approved_step: int = -1  # the highest step index a person approved
    outcome: str | None = None
    reason: str | None = None
    ended_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the analysis engine says about the current phase, reduced to what steps need.

    failing: one sentence per FAILed criterion (any FAIL fails the step, whatever `must`);
    unproven: one sentence per `must: pass` criterion not yet PASS;
    no_data: one sentence per criterion judged on no data at all: it holds the step whatever
    its `must` (no data is never "nothing failed"), and names itself when the step ends;
    ruled_out: one sentence per not_fail criterion whose power floor is met ("accuracy: no
    regression larger than 20 points"); one not yet met is in `unproven`;
    samples: candidate calls logged in the current step (or shadow phase);
    must_pass / must_not_fail: how many criteria of each kind the step was judged on;
    error: the analysis itself raised (no judgement): the step cannot advance, and its max
    duration ends it like any inconclusive step, so a broken analysis never holds a
    rollout in place for ever.
    split_mismatch: the sample-ratio guard's sentence when the candidate's observed share of
    requests is not the configured one: the comparison is meaningless, so the step holds
    (a FAIL still fails: rolling back is always safe).
    """

    failing: tuple[str, ...] = ()
    unproven: tuple[str, ...] = ()
    no_data: tuple[str, ...] = ()
    ruled_out: tuple[str, ...] = ()
    samples: int = 0
    must_pass: int = 0
    must_not_fail: int = 0
    summary: str = ""
    judgement: Mapping[str, Any] | None = None
    error: str | None = None
    split_mismatch: str | None = None  # the canary's traffic share is not the configured one

    @property
    def basis(self) -> str:
        """Which kind of evidence an advance rests on: pass, not_fail or both."""
        if self.must_pass and self.must_not_fail:
            return "pass+not_fail"
        return "pass" if self.must_pass else "not_fail"


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; `evidence` is the latest judgement (None where none is needed)."""

    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class GuardTrip:
    """The gateway's fast guard routed away from the canary."""

    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str = "paused by an operator"


@dataclass(frozen=True, slots=True)
class Resume:
    reason: str = "resumed by an operator"


@dataclass(frozen=True, slots=True)
class Promote:
    reason: str = "promoted manually by an operator"


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str = "aborted by an operator"


@dataclass(frozen=True, slots=True)
class Approve:
    reason: str = "approved by an operator"


Event = Tick | GuardTrip | Pause | Resume | Promote | Abort | Approve


@dataclass(frozen=True, slots=True)
class Transition:
    """The machine's answer. `changed` False means: nothing to persist (reason says why)."""

    state: RolloutState
    kind: str
    reason: str
    changed: bool = True
    evidence: str | None = None  # pass | not_fail | pass+not_fail | manual: what it rested on
    judgement: Mapping[str, Any] | None = None
    effects: tuple[str, ...] = field(default=("route", "notify"))


def _pct(bp: int) -> str:
    return f"{bp / 100:g}%"


def _stay(state: RolloutState, reason: str) -> Transition:
    return Transition(state, "none", reason, changed=False, effects=())


def _end(state: RolloutState, phase: Phase, now: float, reason: str) -> RolloutState:
    return replace(
        state,
        phase=phase,
        canary_weight_bp=0,
        mirror_bp=0,
        paused_phase=None,
        outcome=OUTCOME[phase],
        reason=reason,
        ended_at=now,
    )


def _next_step_index(state: RolloutState) -> int:
    phase = state.paused_phase if state.phase == Phase.PAUSED else state.phase
    return state.step_index + 1 if phase == Phase.CANARY else 0


def _gated(state: RolloutState, index: int) -> bool:
    spec = state.spec
    if index >= len(spec.canary.steps):
        return False
    weight = spec.canary.steps[index].weight
    return weight in spec.canary.approval_before and state.approved_step < index


def awaiting_approval(state: RolloutState) -> int | None:
    """The step index a person must approve before the rollout can go on, if any."""
    if state.terminal or state.phase in (Phase.ROLLING_BACK, Phase.PROMOTING):
        return None
    phase = state.paused_phase if state.phase == Phase.PAUSED else state.phase
    shadow = state.spec.shadow
    if phase in (Phase.PENDING, Phase.SHADOW) and shadow.enabled and shadow.then != "canary":
        return None  # this shadow promotes or stops: no canary step will ever be gated
    index = _next_step_index(state)
    return index if _gated(state, index) else None


def _to_canary_step(
    state: RolloutState, index: int, now: float, reason: str, evidence: Evidence | None
) -> Transition:
    if _gated(state, index):
        return _stay(
            state, f"waiting for approval before the {state.spec.step_weights[index]:g}% step"
        )
    weight = step_weights_bp(state.spec)[index]
    new = replace(
        state,
        phase=Phase.CANARY,
        step_index=index,
        canary_weight_bp=weight,
        mirror_bp=0,
        step_started_at=now,
    )
    return Transition(
        new,
        "advance",
        f"canary step {index + 1}/{len(state.spec.canary.steps)} at {_pct(weight)}: {reason}",
        evidence=evidence.basis if evidence else None,
        judgement=evidence.judgement if evidence else None,
    )


def _to_promoting(
    state: RolloutState, now: float, reason: str, evidence: str | None, judgement: Any = None
) -> Transition:
    new = replace(state, phase=Phase.PROMOTING, paused_phase=None, step_started_at=now)
    return Transition(new, "promote", reason, evidence=evidence, judgement=judgement)


def _fail(state: RolloutState, now: float, reason: str, evidence: Evidence | None) -> Transition:
    judgement = evidence.judgement if evidence else None
    if state.spec.on_failure == "pause":
        new = replace(state, phase=Phase.PAUSED, paused_phase=state.phase)
        return Transition(
            new,
            "pause",
            f"{reason} (on_failure: pause, held at {_pct(state.canary_weight_bp)})",
            judgement=judgement,
            effects=("route", "notify", "alert"),
        )
    return _rollback(state, now, reason, judgement)


def _rollback(state: RolloutState, now: float, reason: str, judgement: Any = None) -> Transition:
    # Traffic and mirror go to zero in the same transaction as this decision.
    new = replace(
        state,
        phase=Phase.ROLLING_BACK,
        canary_weight_bp=0,
        mirror_bp=0,
        paused_phase=None,
        reason=reason,
        step_started_at=now,
    )
    return Transition(new, "rollback", reason, judgement=judgement)


def _judge_window(
    state: RolloutState,
    ev: Evidence,
    now: float,
    *,
    what: str,
    min_duration: float,
    max_duration: float,
    min_samples: int,
    on_inconclusive: str,
) -> tuple[str, str]:
    """("fail"|"advance"|"inconclusive"|"wait", reason) for the current window."""
    if ev.failing:
        return "fail", f"{what}: " + "; ".join(ev.failing)
    elapsed = now - state.step_started_at
    ready = elapsed >= min_duration and ev.samples >= min_samples and ev.error is None
    if ready and not ev.unproven and not ev.no_data:
        return "advance", _advanced(what, elapsed, ev)
    if elapsed >= max_duration:
        missing = []
        if ev.error is not None:
            missing.append(f"the analysis keeps failing: {ev.error}")
        elif ev.samples < min_samples:
            missing.append(f"{ev.samples}/{min_samples} samples")
        missing.extend(ev.unproven)
        missing.extend(ev.no_data)
        detail = "; ".join(missing) or "no decision"
        verb = "rolling back" if on_inconclusive == "fail" else "holding"
        return "inconclusive", (
            f"{what} still inconclusive at its max duration {max_duration:g}s ({detail}); "
            f"on_inconclusive: {on_inconclusive}, {verb}"
        )
    waiting = waiting_for(ev, elapsed, min_duration=min_duration, min_samples=min_samples)
    return "wait", f"{what}: waiting ({', '.join(waiting)})"


def waiting_for(
    ev: Evidence, elapsed: float, *, min_duration: float, min_samples: int
) -> list[str]:
    """What a step still waits for, in words (the controller's and the judge-only answer's)."""
    waiting = []
    if ev.error is not None:
        waiting.append(f"the analysis failed: {ev.error}")
    if elapsed < min_duration:
        waiting.append(f"{elapsed:.0f}/{min_duration:g}s")
    if ev.samples < min_samples:
        waiting.append(f"{ev.samples}/{min_samples} samples")
    if ev.unproven:
        waiting.append(f"{len(ev.unproven)} criteria undecided: " + "; ".join(ev.unproven))
    if ev.no_data:
        waiting.append("; ".join(ev.no_data))
    return waiting


def _advanced(what: str, elapsed: float, ev: Evidence) -> str:
    """ "passed" only when every criterion PASSed; otherwise say what the advance rests on."""
    head = f"{what} after {elapsed:.0f}s and {ev.samples} samples"
    if not ev.must_not_fail:
        return f"{head}: passed ({ev.must_pass} must-pass PASS)"
    parts = [f"{ev.must_pass} must-pass PASS"] if ev.must_pass else []
    parts.extend(ev.ruled_out)
    rest = ev.must_not_fail - len(ev.ruled_out)
    if rest > 0:
        parts.append(f"{rest} more not failing")
    return f"{head}: advanced: " + "; ".join(parts)


def _hold(state: RolloutState, reason: str, ev: Evidence) -> Transition:
    new = replace(state, phase=Phase.PAUSED, paused_phase=state.phase)
    return Transition(
        new, "hold", reason, judgement=ev.judgement, effects=("route", "notify", "alert")
    )


def _tick_shadow(state: RolloutState, ev: Evidence, now: float) -> Transition:
    s = state.spec.shadow
    verdict, reason = _judge_window(
        state,
        ev,
        now,
        what="shadow",
        min_duration=s.min_duration,
        max_duration=s.max_duration,
        min_samples=s.min_samples,
        on_inconclusive=state.spec.canary.on_inconclusive,
    )
    if verdict == "fail":
        return _fail(state, now, reason, ev)
    if verdict == "inconclusive":
        if state.spec.canary.on_inconclusive == "fail":
            return _rollback(state, now, reason, ev.judgement)
        return _hold(state, reason, ev)
    if verdict == "wait":
        return _stay(state, reason)
    if s.then == "stop":
        new = _end(state, Phase.COMPLETED, now, f"shadow-only rollout: {reason}")
        return Transition(
            new, "complete", new.reason or reason, evidence=ev.basis, judgement=ev.judgement
        )
    if s.then == "promote":
        return _to_promoting(
            state, now, f"{reason}; replacing production directly", ev.basis, ev.judgement
        )
    return _to_canary_step(state, 0, now, reason, ev)


def _tick_canary(state: RolloutState, ev: Evidence, now: float) -> Transition:
    c = state.spec.canary
    st = c.steps[state.step_index]
    if ev.split_mismatch and not ev.failing:
        return _hold(
            state,
            f"canary step {_pct(state.canary_weight_bp)}: {ev.split_mismatch}; held at "
            f"{_pct(state.canary_weight_bp)} until a person resumes, promotes or aborts",
            ev,
        )
    verdict, reason = _judge_window(
        state,
        ev,
        now,
        what=f"canary step {_pct(state.canary_weight_bp)}",
        min_duration=c.step_min_duration(st),
        max_duration=c.step_max_duration(st),
        min_samples=c.step_min_samples(st),
        on_inconclusive=c.on_inconclusive,
    )
    if verdict == "fail":
        return _fail(state, now, reason, ev)
    if verdict == "inconclusive":
        if c.on_inconclusive == "fail":
            return _rollback(state, now, reason, ev.judgement)
        return _hold(state, reason, ev)
    if verdict == "wait":
        return _stay(state, reason)
    if state.step_index + 1 >= len(c.steps):
        return _to_promoting(
            state, now, f"{reason}; last step done, promoting", ev.basis, ev.judgement
        )
    return _to_canary_step(state, state.step_index + 1, now, reason, ev)


def _tick(state: RolloutState, event: Tick, now: float) -> Transition:
    phase = state.phase
    if phase == Phase.PENDING:
        if state.spec.shadow.enabled:
            new = replace(
                state, phase=Phase.SHADOW, mirror_bp=mirror_bp(state.spec), step_started_at=now
            )
            return Transition(new, "start", f"shadow started, mirroring {_pct(new.mirror_bp)}")
        return _to_canary_step(state, 0, now, "rollout started (shadow skipped)", None)
    if phase == Phase.PROMOTING:
        new = _end(
            state,
            Phase.PROMOTED,
            now,
            f"{state.candidate} is now stable at 100%; previous stable "
            f"{state.previous_stable} kept for `coalmine rollback`",
        )
        return Transition(new, "promoted", new.reason or "")
    if phase == Phase.ROLLING_BACK:
        new = _end(state, Phase.ROLLED_BACK, now, state.reason or "rolled back")
        return Transition(new, "rolled_back", new.reason or "")
    if phase in (Phase.SHADOW, Phase.CANARY):
        if event.evidence is None:
            return _stay(state, "no evidence yet")
        if phase == Phase.SHADOW:
            return _tick_shadow(state, event.evidence, now)
        return _tick_canary(state, event.evidence, now)
    return _stay(state, f"{phase.value}: nothing to do on a tick")


def step(state: RolloutState, event: Event, now: float) -> Transition:
    """The transition `event` causes at time `now` (pure; raises InvalidTransition)."""
    if state.terminal:
        if isinstance(event, Tick | GuardTrip):
            return _stay(state, f"rollout already {state.phase.value}")
        raise InvalidTransition(f"rollout {state.id} already ended ({state.phase.value})")
    if isinstance(event, Tick):
        return _tick(state, event, now)
    if isinstance(event, GuardTrip):
        if state.phase == Phase.ROLLING_BACK:
            return _stay(state, "already rolling back")
        return _rollback(state, now, f"fast guard: {event.reason}")
    if isinstance(event, Abort):
        reason = event.reason
        if state.phase == Phase.ROLLING_BACK:
            # the failure that started the rollback stays the rollout's reason
            reason = f"{reason} while rolling back: {state.reason or 'no reason recorded'}"
        new = _end(state, Phase.ABORTED, now, reason)
        return Transition(new, "abort", reason)
    if state.phase == Phase.ROLLING_BACK:
        raise InvalidTransition(f"rollout {state.id} is rolling back")
    if isinstance(event, Pause):
        if state.phase == Phase.PAUSED:
            return _stay(state, "already paused")
        if state.phase == Phase.PROMOTING:
            raise InvalidTransition(f"rollout {state.id} is already promoting")
        new = replace(state, phase=Phase.PAUSED, paused_phase=state.phase)
        return Transition(new, "pause", event.reason)
    if isinstance(event, Resume):
        if state.phase != Phase.PAUSED or state.paused_phase is None:
            raise InvalidTransition(f"rollout {state.id} is not paused ({state.phase.value})")
        # the step's clock restarts: evidence gathered while paused is still counted by
        # the engine, but the minimum duration is served again from now
        new = replace(state, phase=state.paused_phase, paused_phase=None, step_started_at=now)
        return Transition(new, "resume", event.reason)
    if isinstance(event, Promote):
        if state.phase == Phase.PROMOTING:
            return _stay(state, "already promoting")
        return _to_promoting(state, now, event.reason, "manual")
    if isinstance(event, Approve):
        index = awaiting_approval(state)
        if index is None:
            raise InvalidTransition(f"rollout {state.id} is not waiting for an approval")
        new = replace(state, approved_step=index)
        weight = state.spec.step_weights[index]
        return Transition(
            new, "approve", f"{event.reason}: the {weight:g}% step", effects=("notify",)
        )
    raise TypeError(f"unknown event {event!r}")
