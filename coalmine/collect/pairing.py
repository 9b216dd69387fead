"""Pair each logged response with its request, in either order, in bounded memory (pure).

KServe's logger sends a call's request and response as two events from a worker pool, so
either may arrive first, and a response never comes for an answer other than 200. Events
wait here, keyed by their call, until their other half arrives or `timeout_s` passes; at
most `max_pending` wait, the oldest giving way (counted) when more arrive. Nothing here
does I/O or reads a clock: the caller passes `now`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from coalmine.collect.cloudevents import LoggedEvent

__all__ = ["Pairer", "Waiting"]


@dataclass(frozen=True, slots=True)
class Waiting:
    event: LoggedEvent
    arrived: float  # the caller's clock when it came


class Pairer:
    def __init__(self, timeout_s: float, max_pending: int) -> None:
        if timeout_s <= 0 or max_pending < 1:
            raise ValueError("timeout_s must be positive and max_pending at least 1")
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._waiting: collections.OrderedDict[tuple[str, ...], Waiting] = collections.OrderedDict()
        self.paired = 0
        self.expired_requests = 0  # never answered (or the answer was lost)
        self.expired_responses = 0  # the request never came (logger mode "response"?)
        self.evicted = 0  # pushed out by `max_pending`
        self.repeated = 0  # the same half of a call twice: the first one is kept

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, event: LoggedEvent, now: float) -> tuple[Waiting, Waiting] | None:
        """(request, response) when `event` completes a call, else None (it waits)."""
        key = event.call
        other = self._waiting.get(key)
        if other is not None:
            if other.event.kind == event.kind:
                self.repeated += 1
                return None
            del self._waiting[key]
            self.paired += 1
            this = Waiting(event, now)
            return (other, this) if other.event.kind == "request" else (this, other)
        while len(self._waiting) >= self.max_pending:
            self._waiting.popitem(last=False)
            self.evicted += 1
        self._waiting[key] = Waiting(event, now)
        return None

    def expire(self, now: float) -> list[Waiting]:
        """Remove and return the events that waited longer than `timeout_s` (oldest first)."""
        out: list[Waiting] = []
        while self._waiting:
            key, first = next(iter(self._waiting.items()))
            if now - first.arrived < self.timeout_s:
                break
            del self._waiting[key]
            if first.event.kind == "request":
                self.expired_requests += 1
            else:
                self.expired_responses += 1
            out.append(first)
        return out
