"""Prometheus metrics of the prediction log writer (default registry, one set per process).

Each gateway process has its own writer and exposes its own figures; a scrape sums them.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from prometheus_client import Counter, Gauge

__all__ = ["BUFFER_DEPTH", "DROPPED", "WRITE_ERRORS", "WRITTEN", "track_buffer"]

WRITTEN = Counter("coalmine_log_written", "Prediction log rows written to the store")
DROPPED = Counter(
    "coalmine_log_dropped", "Prediction log rows dropped (buffer full, closed, or unwritable)"
)
WRITE_ERRORS = Counter("coalmine_log_write_errors", "Failed prediction log batch writes")
BUFFER_DEPTH = Gauge("coalmine_log_buffer_depth", "Prediction log rows waiting to be written")


class _Buffered(Protocol):
    def buffered(self) -> int: ...


_writers: weakref.WeakSet[_Buffered] = weakref.WeakSet()


def track_buffer(writer: _Buffered) -> None:
    """Count `writer`'s buffer in the depth gauge (computed at scrape time, so free)."""
    _writers.add(writer)


BUFFER_DEPTH.set_function(lambda: float(sum(w.buffered() for w in list(_writers))))
