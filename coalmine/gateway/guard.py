"""The fast guard: stop routing to a canary after N consecutive failures, in this process.

Pure bookkeeping, no I/O: the app feeds it each canary outcome and, on a trip, zeroes the
canary locally at once and records the trip in the store off the event loop (which zeroes
the stored weight too, so every gateway process follows within one poll, and the controller
rolls back). A trip holds for that canary (version and rollout) until the store shows a
deliberate change: another canary or rollout, or a weight raised again after the zeroing.
"""

from __future__ import annotations

from dataclasses import dataclass

from coalmine.routing.state import RouteState

__all__ = ["FastGuard", "Trip"]


@dataclass(slots=True)
class Trip:
    canary: str
    rollout_id: int | None
    seen_zero: bool = False  # the store has shown the canary at weight 0 since the trip


class FastGuard:
    def __init__(self, default_threshold: int) -> None:
        self.default_threshold = default_threshold
        self._failures: dict[str, int] = {}
        self._trips: dict[str, Trip] = {}

    def threshold(self, state: RouteState) -> int:
        """Consecutive failures that trip the guard for this route; 0 = off."""
        return state.guard_failures if state.guard_failures > 0 else self.default_threshold

    def record(self, state: RouteState, failed: bool) -> bool:
        """Count one canary outcome; True exactly when this failure trips the guard."""
        model = state.model
        if not failed:
            if self._failures.get(model):
                self._failures[model] = 0
            return False
        count = self._failures.get(model, 0) + 1
        self._failures[model] = count
        threshold = self.threshold(state)
        if threshold <= 0 or count < threshold or model in self._trips:
            return False
        assert state.canary is not None
        self._trips[model] = Trip(state.canary, state.rollout_id)
        self._failures[model] = 0
        return True

    def is_tripped(self, state: RouteState) -> bool:
        """Whether the canary of `state` (as stored) must get no traffic from this process.

        Called on every new view of the store; updates the trip's lifecycle as it goes.
        """
        trip = self._trips.get(state.model)
        if trip is None:
            return False
        if (state.canary, state.rollout_id) != (trip.canary, trip.rollout_id):
            self._forget(state.model)
            return False
        if state.canary_weight_bp == 0:
            trip.seen_zero = True
            return True
        if trip.seen_zero:
            self._forget(state.model)  # someone raised the weight again on purpose
            return False
        return True

    def _forget(self, model: str) -> None:
        self._trips.pop(model, None)
        self._failures.pop(model, None)
