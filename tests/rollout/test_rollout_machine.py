"""The pure state machine, table-driven: (state, event, now) -> expected transition."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from coalmine.rollout.machine import (
    Abort,
    Approve,
    Event,
    Evidence,
    GuardTrip,
    InvalidTransition,
    Pause,
    Phase,
    Promote,
    Resume,
    RolloutState,
    Tick,
    awaiting_approval,
    step,
)
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.weights import desired_route

FAST: dict[str, Any] = {
    "shadow": {"min_duration": 10, "max_duration": 100, "min_samples": 50},
    "canary": {"min_duration": 10, "max_duration": 100, "min_samples": 20},
}
OK = Evidence(samples=1000, must_not_fail=2)
FEW = Evidence(samples=3, must_not_fail=2)
BAD = Evidence(failing=("accuracy 0.85 vs 0.90 is below the margin: FAIL",), samples=500)
BROKEN = Evidence(error="OperationalError: database is locked")
UNPROVEN = Evidence(unproven=("agreement not yet PASS",), samples=1000, must_pass=1)


def state(
    phase: Phase = Phase.PENDING, spec: dict[str, Any] | None = None, **kw: Any
) -> RolloutState:
    merged = {**FAST, **(spec or {})}
    return RolloutState(
        id=1,
        model="m",
        candidate="v2",
        previous_stable="v1",
        spec=parse_spec(merged),
        phase=phase,
        started_at=0.0,
        step_started_at=kw.pop("step_started_at", 0.0),
        **kw,
    )


CANARY0 = {"step_index": 0, "canary_weight_bp": 100}
CASES: list[tuple[str, RolloutState, Event, float, dict[str, Any]]] = [
    ("pending starts shadow", state(), Tick(), 1, {"phase": Phase.SHADOW, "mirror_bp": 10000}),
    (
        "pending skips a disabled shadow",
        state(spec={"shadow": {"enabled": False}}),
        Tick(),
        1,
        {"phase": Phase.CANARY, "canary_weight_bp": 100, "step_started_at": 1},
    ),
    ("shadow waits for its minimum duration", state(Phase.SHADOW), Tick(OK), 5, {"changed": False}),
    (
        "shadow waits for its minimum samples",
        state(Phase.SHADOW),
        Tick(FEW),
        50,
        {"changed": False},
    ),
    (
        "shadow waits for must-pass criteria",
        state(Phase.SHADOW),
        Tick(UNPROVEN),
        50,
        {"changed": False},
    ),
    (
        "shadow passes into canary 1%",
        state(Phase.SHADOW, mirror_bp=10000),
        Tick(OK),
        11,
        {
            "phase": Phase.CANARY,
            "canary_weight_bp": 100,
            "mirror_bp": 0,
            "step_started_at": 11,
            "evidence": "not_fail",
        },
    ),
    (
        "shadow-only ends completed",
        state(Phase.SHADOW, spec={"shadow": {"then": "stop", "min_duration": 10}}),
        Tick(OK),
        11,
        {"phase": Phase.COMPLETED, "outcome": "completed"},
    ),
    (
        "shadow then replace goes promoting",
        state(Phase.SHADOW, spec={"shadow": {"then": "promote", "min_duration": 10}}),
        Tick(OK),
        11,
        {"phase": Phase.PROMOTING},
    ),
    (
        "shadow FAIL rolls back",
        state(Phase.SHADOW, mirror_bp=10000),
        Tick(BAD),
        1,
        {"phase": Phase.ROLLING_BACK, "mirror_bp": 0, "kind": "rollback"},
    ),
    (
        "canary step advances",
        state(Phase.CANARY, **CANARY0),
        Tick(OK),
        10,
        {"phase": Phase.CANARY, "step_index": 1, "canary_weight_bp": 500},
    ),
    (
        "canary waits below min samples",
        state(Phase.CANARY, **CANARY0),
        Tick(FEW),
        50,
        {"changed": False},
    ),
    (
        "last step goes promoting",
        state(Phase.CANARY, step_index=4, canary_weight_bp=10000),
        Tick(OK),
        10,
        {"phase": Phase.PROMOTING, "evidence": "not_fail"},
    ),
    (
        "promoting ends promoted",
        state(Phase.PROMOTING, step_index=4, canary_weight_bp=10000),
        Tick(),
        1,
        {"phase": Phase.PROMOTED, "outcome": "promoted", "canary_weight_bp": 0},
    ),
    (
        "canary FAIL rolls back to 0",
        state(Phase.CANARY, step_index=2, canary_weight_bp=2500),
        Tick(BAD),
        1,
        {"phase": Phase.ROLLING_BACK, "canary_weight_bp": 0},
    ),
    (
        "FAIL with on_failure pause holds",
        state(Phase.CANARY, spec={"on_failure": "pause"}, step_index=2, canary_weight_bp=2500),
        Tick(BAD),
        1,
        {"phase": Phase.PAUSED, "canary_weight_bp": 2500, "paused_phase": Phase.CANARY},
    ),
    (
        "rolling back ends rolled back",
        state(Phase.ROLLING_BACK, reason="r"),
        Tick(),
        1,
        {"phase": Phase.ROLLED_BACK, "outcome": "rolled_back", "reason": "r"},
    ),
    (
        "inconclusive at max holds by default",
        state(Phase.CANARY, **CANARY0),
        Tick(UNPROVEN),
        100,
        {"phase": Phase.PAUSED, "kind": "hold"},
    ),
    (
        "inconclusive at max fails when asked",
        state(
            Phase.CANARY,
            spec={"canary": {"on_inconclusive": "fail", "min_duration": 10}},
            **CANARY0,
        ),
        Tick(FEW),
        2000,
        {"phase": Phase.ROLLING_BACK},
    ),
    (
        "a failing analysis never advances a step",
        state(Phase.CANARY, **CANARY0),
        Tick(BROKEN),
        50,
        {"changed": False},
    ),
    (
        "a failing analysis ends the step at its max duration",
        state(Phase.CANARY, spec={"canary": {"on_inconclusive": "fail"}}, **CANARY0),
        Tick(BROKEN),
        100_000,
        {"phase": Phase.ROLLING_BACK, "reason_has": "analysis keeps failing: OperationalError"},
    ),
    (
        "a failing analysis in shadow holds at its max duration",
        state(Phase.SHADOW, mirror_bp=10000),
        Tick(BROKEN),
        100,
        {"phase": Phase.PAUSED, "kind": "hold"},
    ),
    (
        "guard trip rolls back a canary",
        state(Phase.CANARY, **CANARY0),
        GuardTrip("5 x 502"),
        1,
        {"phase": Phase.ROLLING_BACK, "canary_weight_bp": 0},
    ),
    (
        "guard trip rolls back a paused rollout",
        state(Phase.PAUSED, paused_phase=Phase.CANARY, **CANARY0),
        GuardTrip("5 x 502"),
        1,
        {"phase": Phase.ROLLING_BACK},
    ),
    (
        "pause holds weights",
        state(Phase.CANARY, **CANARY0),
        Pause(),
        1,
        {"phase": Phase.PAUSED, "canary_weight_bp": 100, "paused_phase": Phase.CANARY},
    ),
    (
        "paused ignores ticks",
        state(Phase.PAUSED, paused_phase=Phase.CANARY, **CANARY0),
        Tick(OK),
        500,
        {"changed": False},
    ),
    (
        "resume restarts the step clock",
        state(Phase.PAUSED, paused_phase=Phase.CANARY, **CANARY0),
        Resume(),
        42,
        {"phase": Phase.CANARY, "step_started_at": 42},
    ),
    (
        "manual promote",
        state(Phase.CANARY, **CANARY0),
        Promote(),
        1,
        {"phase": Phase.PROMOTING, "evidence": "manual"},
    ),
    (
        "abort ends with traffic back",
        state(Phase.CANARY, **CANARY0),
        Abort(),
        1,
        {"phase": Phase.ABORTED, "canary_weight_bp": 0, "outcome": "aborted"},
    ),
    (
        "terminal ignores guard trips",
        state(Phase.PROMOTED),
        GuardTrip("late"),
        1,
        {"changed": False},
    ),
]


@pytest.mark.parametrize(
    ("name", "before", "event", "now", "expect"), CASES, ids=[c[0] for c in CASES]
)
def test_step(
    name: str, before: RolloutState, event: Event, now: float, expect: dict[str, Any]
) -> None:
    t = step(before, event, now)
    assert t.reason, "every transition says why"
    for key, value in expect.items():
        if key in ("changed", "evidence", "kind"):
            assert getattr(t, key) == value, (key, t)
        elif key == "reason_has":
            assert value in t.reason, t.reason
        else:
            assert getattr(t.state, key) == value, (key, t)
    if t.changed and t.state.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        assert t.state.canary_weight_bp == 0 and t.state.mirror_bp == 0


MISMATCH = "sample ratio mismatch: the candidate got 0 of 300 requests"


def test_a_split_mismatch_holds_the_canary_and_a_failure_still_fails() -> None:
    canary = state(Phase.CANARY, **CANARY0)
    held = step(canary, Tick(replace(OK, split_mismatch=MISMATCH)), 50)
    assert (held.kind, held.state.phase, held.state.paused_phase) == (
        "hold", Phase.PAUSED, Phase.CANARY,
    )  # fmt: skip
    assert MISMATCH in held.reason and "alert" in held.effects
    assert held.state.canary_weight_bp == 100
    failed = step(canary, Tick(replace(BAD, split_mismatch=MISMATCH)), 50)
    assert failed.state.phase == Phase.ROLLING_BACK


def test_an_abort_while_rolling_back_keeps_the_failure_as_the_reason() -> None:
    rolling = step(state(Phase.CANARY, **CANARY0), Tick(BAD), 1).state
    t = step(rolling, Abort(), 2)
    assert t.state.phase == Phase.ABORTED
    assert "accuracy 0.85 vs 0.90" in (t.state.reason or "") and "aborted" in t.reason


def test_failure_reason_quotes_the_judgement() -> None:
    t = step(state(Phase.CANARY, **CANARY0), Tick(BAD), 1)
    assert "accuracy 0.85 vs 0.90" in t.reason


@pytest.mark.parametrize(
    ("before", "event"),
    [
        (state(Phase.PROMOTED), Pause()),
        (state(Phase.ROLLED_BACK), Promote()),
        (state(Phase.CANARY, **CANARY0), Resume()),
        (state(Phase.ROLLING_BACK), Promote()),
        (state(Phase.CANARY, **CANARY0), Approve()),
        (state(Phase.ABORTED), Abort()),
    ],
)
def test_invalid_manual_operations_raise(before: RolloutState, event: Event) -> None:
    with pytest.raises(InvalidTransition):
        step(before, event, 1)


def test_approval_gate_blocks_until_approved() -> None:
    gated = state(
        Phase.CANARY,
        spec={"canary": {"approval_before": [25], "min_duration": 10}},
        step_index=1,
        canary_weight_bp=500,
    )
    assert awaiting_approval(gated) == 2
    blocked = step(gated, Tick(OK), 50)
    assert not blocked.changed and "approval" in blocked.reason
    approved = step(gated, Approve(), 50)
    assert approved.state.approved_step == 2 and approved.state.phase == Phase.CANARY
    assert awaiting_approval(approved.state) is None
    advanced = step(approved.state, Tick(OK), 51)
    assert advanced.state.step_index == 2 and advanced.state.canary_weight_bp == 2500


@pytest.mark.parametrize("then", ["promote", "stop"])
def test_a_shadow_that_never_reaches_a_canary_waits_for_no_approval(then: str) -> None:
    spec = {"shadow": {"then": then}, "canary": {"steps": [5, 50], "approval_before": [5]}}
    for phase in (Phase.PENDING, Phase.SHADOW):
        s = state(phase, spec=spec, mirror_bp=10000 if phase == Phase.SHADOW else 0)
        assert awaiting_approval(s) is None
        with pytest.raises(InvalidTransition):
            step(s, Approve(), 1)
    # with then: canary the gate shows from the shadow on (it may be approved in advance)
    ahead = state(Phase.SHADOW, spec={**spec, "shadow": {"then": "canary"}}, mirror_bp=10000)
    assert awaiting_approval(ahead) == 0


def test_a_good_candidate_walks_every_step_exactly_once() -> None:
    s, now, weights, kinds = state(), 0.0, [], []
    for _ in range(50):
        now += 11
        t = step(s, Tick(OK), now)
        if t.changed:
            kinds.append(t.kind)
            weights.append(t.state.canary_weight_bp)
        s = t.state
        if s.terminal:
            break
    assert s.phase == Phase.PROMOTED
    assert kinds == [
        "start",
        "advance",
        "advance",
        "advance",
        "advance",
        "advance",
        "promote",
        "promoted",
    ]
    assert weights[1:6] == [100, 500, 2500, 5000, 10000]


def test_replaying_an_applied_tick_on_the_new_state_does_not_skip_a_step() -> None:
    # A controller that crashed after committing re-reads the new state: the same tick at the
    # same instant must not advance again (the new step's clock starts at `now`).
    s = state(Phase.CANARY, **CANARY0)
    first = step(s, Tick(OK), 10)
    again = step(first.state, Tick(OK), 10)
    assert first.state.step_index == 1 and not again.changed


@pytest.mark.parametrize(
    ("phase", "weight", "mirror", "expect"),
    [
        ("shadow", 0, 10000, ("v1", None, 0, "v2", 10000)),
        ("canary", 500, 0, ("v1", "v2", 500, None, 0)),
        ("paused", 500, 0, ("v1", "v2", 500, None, 0)),
        ("promoted", 0, 0, ("v2", None, 0, None, 0)),
        ("rolling_back", 0, 0, ("v1", None, 0, None, 0)),
        ("aborted", 0, 0, ("v1", None, 0, None, 0)),
    ],
)
def test_desired_route(phase: str, weight: int, mirror: int, expect: tuple[Any, ...]) -> None:
    r = desired_route(
        phase,
        candidate="v2",
        previous_stable="v1",
        canary_weight_bp=weight,
        mirror_bp=mirror,
        rollout_id=7,
    )
    assert (r.stable, r.canary, r.canary_weight_bp, r.shadow, r.mirror_bp) == expect


def test_state_is_frozen() -> None:
    s = state()
    with pytest.raises(AttributeError):
        s.phase = Phase.CANARY  # type: ignore[misc]
    assert replace(s, phase=Phase.CANARY).phase == Phase.CANARY


@pytest.mark.parametrize(
    ("phase", "weight", "mirror", "expect"),
    [
        ("pending", 0, 0, (None, 0)),
        ("shadow", 0, 10_000, ("http://b", 0)),  # mirrored copies only
        ("canary", 100, 0, ("http://b", 100)),
        ("canary", 5000, 0, ("http://b", 5000)),
        ("canary", 7500, 0, ("http://b", 2500)),  # what is left beside the canary
        ("canary", 10_000, 0, (None, 0)),
        ("paused", 500, 0, ("http://b", 500)),
        ("promoted", 10_000, 0, (None, 0)),
        ("rolled_back", 0, 0, (None, 0)),
    ],
)
def test_desired_route_with_a_baseline(
    phase: str, weight: int, mirror: int, expect: tuple[Any, ...]
) -> None:
    r = desired_route(
        phase, candidate="v2", previous_stable="v1", canary_weight_bp=weight, mirror_bp=mirror,
        rollout_id=7, baseline_url="http://b",
    )  # fmt: skip
    assert (r.baseline_url, r.baseline_bp) == expect
