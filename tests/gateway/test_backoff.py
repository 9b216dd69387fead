"""The mirror's backoff bookkeeping (gateway/backoff.py), on a clock the test moves."""

from __future__ import annotations

from coalmine.gateway.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_target_is_held_then_probed_once_then_waits_twice_as_long() -> None:
    clock = Clock()
    backoff = Backoff(0.25, 0.75, clock=clock)  # binary fractions: exact sums
    assert not backoff and backoff.held("h:1") is None
    assert backoff.failed("h:1", "connection") == 0.25  # just went down
    assert backoff
    assert backoff.held("h:1") == "connection"  # within the 0.25 s
    assert backoff.held("h:2") is None  # another target is not affected
    assert backoff.failed("h:1", "connection") is None  # a copy sent before: no change
    clock.now += 0.25
    assert backoff.held("h:1", probe=False) is None  # may go out, but starts no probe
    assert backoff.held("h:1") is None  # the probe
    assert backoff.held("h:1") == "connection"  # the others wait for its outcome
    assert backoff.failed("h:1", "timeout") is None  # the probe failed: 0.5 s now
    clock.now += 0.25
    assert backoff.held("h:1") == "timeout"
    clock.now += 0.25
    assert backoff.held("h:1") is None
    backoff.failed("h:1", "timeout")  # 1 s, capped at 0.75 s
    clock.now += 0.5
    assert backoff.held("h:1") == "timeout"
    clock.now += 0.25
    assert backoff.held("h:1") is None
    assert backoff.reached("h:1") == 4  # back: the copies held meanwhile
    assert not backoff and backoff.held("h:1") is None
    assert backoff.reached("h:1") is None  # was not down
    assert backoff.failed("h:1", "connection") == 0.25  # down again: from the start
