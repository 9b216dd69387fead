"""The prediction log writer: a bounded buffer the event loop never waits on.

`submit()` appends to an in-memory buffer and returns at once; a background task writes
batches to the store in a worker thread (`asyncio.to_thread`), every `flush_interval_s` or as
soon as `batch_size` rows are waiting. A stable call made while no rollout runs on its model
is kept at `logging.stable_sample_rate`, one made during a canary step at
`logging.stable_sample_rate_during_rollouts`, its row weighted 1/rate: stable rows are most
of the log, and a uniform subsample of them judges as well (analysis/sampling.py). A full
buffer drops the record and counts it.
A `RawRecord` (a gateway call, its answer still bytes) is decoded here, a batch at a time in
the worker thread before its insert (`answers.finish_all`), not on the request path.
`close()` writes everything still buffered: the gateway calls it on SIGTERM/SIGINT, which is
what makes a graceful stop lose nothing. A failed write is retried with backoff; a batch the
database rejects for its content (not a lost connection) is written row by row so one bad
row cannot block the log. The sampling and the writing of a batch are `coalmine.log.batches`'s,
shared with the writer process (`writer_child`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from coalmine.config import LoggingConfig
from coalmine.log import metrics
from coalmine.log.answers import finish_all
from coalmine.log.batches import Finisher, Insert, StableSampling, write_steps
from coalmine.log.policy import InputPolicy
from coalmine.log.record import LogRecord, PredictionRecord, RawRecord
from coalmine.store.predictions import write_batch

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)

Inserter = Callable[[Engine, Sequence[PredictionRecord]], int]


class BatchWriter:
    """A `PredictionSink` writing to `engine` in batches. Use from one event loop."""

    def __init__(
        self, engine: Engine, config: LoggingConfig, *, inserter: Inserter = write_batch
    ) -> None:
        self.engine = engine
        self.batch_size = config.batch_size
        self.buffer_size = config.buffer_size
        self.flush_interval_s = config.flush_interval_s
        self.sampling = StableSampling(config)
        self._rng = random.Random()
        self._insert = inserter
        self.policy = InputPolicy(config)  # shapes the inputs the gateway deferred
        self._finish = Finisher(self.policy)
        self._buffer: collections.deque[LogRecord] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._deadline = float("inf")  # set by close(): when to give up on a dead database
        self.written = 0
        self.dropped = 0
        self.sampled_out = 0  # stable rows not kept by the sampling (not a loss: weighted)
        self.write_errors = 0
        metrics.track_buffer(self)

    def buffered(self) -> int:
        """Rows accepted but not yet written (the buffer-depth gauge)."""
        return len(self._buffer)

    def submit(self, record: LogRecord) -> bool:
        """Queue one record; False when it was dropped. Never blocks, never raises."""
        try:
            if self._closed or len(self._buffer) >= self.buffer_size:
                self.count_dropped(1)
                return False
            if not self.sampling.keep(record, self._rng):
                self.sampled_out += 1
                return True
            self._buffer.append(record)
            if len(self._buffer) >= self.batch_size and self._wake is not None:
                self._wake.set()
            return True
        except Exception:  # the production path must never fail because of the log
            log.exception("prediction log submit failed")
            return False

    async def start(self) -> None:
        """Start the background flush task on the running loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="coalmine-log-writer")

    async def flush(self) -> None:
        """Write every row buffered now (tests, and callers that need the rows visible)."""
        await self._drain()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting records and write everything still buffered.

        Retries a failing database until `timeout_s`; rows still unwritten then are dropped,
        counted and logged as an error rather than hanging the shutdown forever.
        """
        self._closed = True
        self._deadline = time.monotonic() + timeout_s
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task
        await self._drain()  # never started, or rows the task did not reach
        if self._buffer:
            lost = len(self._buffer)
            self._buffer.clear()
            self.count_dropped(lost)
            log.error("prediction log closed with %d rows unwritten (store unavailable)", lost)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):  # the interval passed: flush anyway
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            try:
                await self._drain()
            except Exception:  # never let the loop die; the next tick tries again
                log.exception("prediction log flush failed")

    async def _drain(self) -> None:
        while self._buffer and time.monotonic() < self._deadline:
            taken = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            # answers decoded once, before any retry; in the worker thread when there are any
            if any(type(r) is RawRecord for r in taken):
                batch = await asyncio.to_thread(self._finish, taken)
            else:
                batch = finish_all(taken, self.policy)
            await self._write(batch)

    async def _write(self, batch: list[PredictionRecord]) -> None:
        """Write one batch (`batches.write_steps`): inserts in a worker thread."""
        steps = write_steps(batch, self, lambda: self._deadline)
        answer: int | BaseException | None = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            if isinstance(step, Insert):
                try:
                    answer = await asyncio.to_thread(self._insert, self.engine, step.rows)
                except Exception as error:
                    answer = error
            else:
                await asyncio.sleep(step.seconds)
                answer = None

    def count_written(self, n: int) -> None:
        self.written += n
        metrics.WRITTEN.inc(n)

    def count_error(self) -> None:
        self.write_errors += 1
        metrics.WRITE_ERRORS.inc()

    def count_dropped(self, n: int) -> None:
        self.dropped += n
        metrics.DROPPED.inc(n)
