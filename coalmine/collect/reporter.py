"""`Reporter`: calls reported to the batch ingest from a background thread, in batches.

`add(item)` never blocks and never raises: it appends to a buffer of at most `buffer_size`
items (more are dropped, counted). A thread sends a batch every `flush_s`, or as soon as
`batch_size` items wait, through `Client.ingest` (which retries what it could not send; the
endpoint is idempotent). A batch still refused is dropped and counted rather than kept
without bound. `close()` sends what is left. Used by `coalmine.Router` and the sidecar.
`held_bytes` is what the queued items' `size`s add up to (the sidecar's request bodies), for
a caller that bounds memory, not just items, while the API is away.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

__all__ = ["Reporter"]

log = logging.getLogger(__name__)


class Reporter:
    def __init__(
        self,
        client: Any,  # a coalmine.Client
        *,
        batch_size: int = 200,
        flush_s: float = 0.5,
        buffer_size: int = 100_000,
    ) -> None:
        self.client = client
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.buffer_size = buffer_size
        self.logged = 0  # items the endpoint took (written or already logged)
        self.dropped = 0  # buffer full, or a batch refused
        self.held_bytes = 0  # the sizes given with the items queued now
        self._items: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="coalmine-reporter", daemon=True)
        self._thread.start()

    def add(self, item: dict[str, Any], size: int = 0) -> bool:
        """Queue one ingest item (`size`: what it adds to `held_bytes`); False when it
        was dropped."""
        with self._wake:
            if self._stop or len(self._items) >= self.buffer_size:
                self.dropped += 1
                return False
            self._items.append((item, size))
            self.held_bytes += size
            if len(self._items) >= self.batch_size:
                self._wake.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._stop and len(self._items) < self.batch_size:
                    self._wake.wait(self.flush_s)
                n = min(self.batch_size, len(self._items))
                taken = [self._items.popleft() for _ in range(n)]
                self.held_bytes -= sum(size for _, size in taken)
                stopping = self._stop
            batch = [item for item, _ in taken]
            if batch:
                self._send(batch)
            elif stopping:
                return

    def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            done = self.client.ingest(batch, batch_size=len(batch))
            self.logged += done["written"] + done["duplicates"]
        except Exception as exc:
            if getattr(exc, "status", None) == 413 and len(batch) > 1:
                half = len(batch) // 2  # over the API's body limit: send it in halves
                self._send(batch[:half])
                self._send(batch[half:])
                return
            self.dropped += len(batch)
            log.warning("coalmine reporter: %d items dropped: %s", len(batch), exc)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the items queued so far were sent (or `timeout_s` passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._wake:
                if not self._items:
                    return
                self._wake.notify()
            time.sleep(0.02)

    def close(self, timeout_s: float = 30.0) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout_s)
