"""A rate-limited log line: what any client can trigger at will must not flood the log.

Per key, at most one line every `interval_s`; the lines held back in between are counted
and the next line that goes out says how many.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["ThrottledLog"]


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log `message % args` at WARNING unless `key` logged within the interval."""
        now = self._clock()
        if now < self._next.get(key, float("-inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._next[key] = now + self.interval_s
        held = self._held.pop(key, 0)
        if held:
            message += f" ({held} more like it since the last such line, not logged)"
        self.logger.warning(message, *args)
        return True
