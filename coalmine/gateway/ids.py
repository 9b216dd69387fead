"""Request ids the gateway makes for requests that arrive without one: time-ordered and
unguessable.

A UUIDv7 (RFC 9562) in 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits
(with the version and variant bits set). Ids made later sort later, so the prediction
log's request_id index grows at its right edge instead of at random pages: with random
(v4) ids each batch of log rows dirtied a leaf page per row, and the log writer's CPU per
row grew with the table (28 us/row at 300k rows vs 11 us/row flat for time-ordered ids,
SQLite WAL).

The random bits come from the operating system's CSPRNG (`os.urandom`), not the process's
Mersenne Twister: a request id is what `POST /v1/feedback` attaches a label to, so an id
an outsider can predict is a label an outsider can forge. MT19937's state is recoverable
from its outputs, and the gateway's ids are echoed to every client in X-Request-ID. One
getrandom() call per 400 ids is the price: drawn in bulk, because each call releases the
GIL and a request path that lets go of it mid-request hands the core to the log writer's
thread for up to a switch interval (5 ms) before it gets it back.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_request_id", "time_ordered_id"]

_RANDOM_BITS = 80  # the 128-bit UUID below its 48-bit timestamp
_RANDOM_BYTES = _RANDOM_BITS // 8
_VERSION_AND_VARIANT = (0xF << 76) | (0x3 << 62)  # their positions in the low 80 bits
_V7 = (0x7 << 76) | (0x2 << 62)  # version 7, variant 0b10


def time_ordered_id(random_bits: int, unix_ms: int) -> str:
    """A UUIDv7 as 32 lowercase hex digits for the millisecond `unix_ms`, its random part
    from the low 80 bits of `random_bits` (74 of them survive the version and variant)."""
    low = random_bits & ((1 << _RANDOM_BITS) - 1) & ~_VERSION_AND_VARIANT | _V7
    return f"{(unix_ms & 0xFFFF_FFFF_FFFF) << _RANDOM_BITS | low:032x}"


_POOL_BYTES = _RANDOM_BYTES * 400


class _RandomPool:
    """os.urandom bytes drawn in bulk and handed out once each (a lock: the API's threads
    may make ids too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._offset = 0

    def take(self) -> int:
        with self._lock:
            offset = self._offset
            if offset >= len(self._bytes):
                self._bytes, offset = os.urandom(_POOL_BYTES), 0
            self._offset = offset + _RANDOM_BYTES
            return int.from_bytes(self._bytes[offset : offset + _RANDOM_BYTES], "big")


_pool = _RandomPool()


def new_request_id() -> str:
    """A fresh id for now: the clock's millisecond and 74 bits from os.urandom."""
    return time_ordered_id(_pool.take(), time.time_ns() // 1_000_000)
