"""When to try again a mirror target that refused or did not answer a connect.

Pure bookkeeping, no I/O (the mirror does the calls and the logging). A target (host:port)
whose connect failed is down for `first_s`; once that passes, one copy goes out as a probe
while the others are still held back; a probe whose connect fails again doubles the wait, up
to `most_s`; any call that reaches the target (an answer, or an error after connecting)
brings it back at once. Without this a dead shadow cost every mirror copy a connect attempt:
about as much CPU per request as a live shadow (benchmarks/gateway.py, "dead shadow").
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Backoff"]


class _Down:
    __slots__ = ("delay", "error_class", "held", "probing", "until")

    def __init__(self, until: float, delay: float, error_class: str) -> None:
        self.until = until
        self.delay = delay
        self.error_class = error_class  # of the connect that failed: the held copies' too
        self.probing = False
        self.held = 0


class Backoff:
    def __init__(
        self,
        first_s: float = 0.1,
        most_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_s = first_s
        self.most_s = most_s
        self._clock = clock
        # the targets down; read as a plain dict by the request path, which asks nothing
        # more while it is empty (one truth test per request)
        self.down: dict[str, _Down] = {}

    def __bool__(self) -> bool:
        """Whether any target is down."""
        return bool(self.down)

    def held(self, target: str, *, probe: bool = True) -> str | None:
        """None when a call to `target` may go out now (a probe, if it is down: with
        `probe` False, one that may become it later, so no probe starts); else the error
        class of the connect that put it down, and the copy is counted as held."""
        down = self.down.get(target)
        if down is None:
            return None
        if down.probing or self._clock() < down.until:
            down.held += 1
            return down.error_class
        if probe:
            down.probing = True
        return None

    def failed(self, target: str, error_class: str) -> float | None:
        """A connect to `target` failed: the seconds it is now down for when it just went
        down, else None (a probe failed: the wait doubles; or a call sent before it went
        down failed too: nothing changes)."""
        now = self._clock()
        down = self.down.get(target)
        if down is None:
            self.down[target] = _Down(now + self.first_s, self.first_s, error_class)
            return self.first_s
        if down.probing:
            down.probing = False
            down.delay = min(down.delay * 2, self.most_s)
            down.until = now + down.delay
            down.error_class = error_class
        return None

    def reached(self, target: str) -> int | None:
        """A call reached `target`: None when it was not down, else how many copies were
        held back while it was."""
        down = self.down.pop(target, None)
        return None if down is None else down.held
