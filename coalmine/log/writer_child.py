"""The prediction log's writer process (`python -m coalmine.log.writer_child`).

Started by `ProcessWriter`: reads frames from stdin (settings first, then pickled lists of
record tuples, flush requests, and the end), decodes the gateway's raw answers (the model's
bytes are only ever read as JSON or binary tensors, never unpickled — inside a frame they are
a `bytes` value), and writes the records in batches; it reports on stdout, one JSON object a
line: its counts after every write, each flush done, and its log lines (logged again by the
gateway). SIGINT and SIGTERM are ignored: it stops when the gateway closes the pipe (or
dies), after writing everything it was given.

It is one plain loop, no event loop and no threads: it has nothing else to do while it
writes. It reads the pipe (waiting at most until the next write is due), and writes a batch
when `batch_size` rows wait, when `flush_interval_s` passed since the last write, on a flush
request and at the end. The sampling, the retries with backoff, the row-by-row writing of a
rejected batch are `BatchWriter`'s (`coalmine.log.batches`); while it backs off from a lost
store it keeps reading the pipe, so the gateway's writes never wait on it, and rows past
`buffer_size` not yet written are dropped and counted.

The frames come from the gateway process that started it, over a pipe no one else holds;
they are unpickled here for that reason only.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import os
import pickle
import random
import selectors
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine

from coalmine.config import LoggingConfig
from coalmine.log.batches import Finisher, Insert, StableSampling, write_steps
from coalmine.log.policy import InputPolicy
from coalmine.log.process_writer import CONFIG, END, FLUSH, ROWS, record_of
from coalmine.log.record import LogRecord, PredictionRecord
from coalmine.store.held import HeldConnection

log = logging.getLogger("coalmine.log.writer")

_READ_BYTES = 1 << 20
END_TIMEOUT_S = 30.0  # how long to retry a failing store after the pipe's end, unless told
# allocations between young-generation collections (CPython's default: 700); see settle_gc
GC_YOUNG = 10_000


class _Reports(logging.Handler):
    """Log lines as reports to the gateway, which logs them again under its logger."""

    def emit(self, record: logging.LogRecord) -> None:
        _report({"log": record.levelno, "message": self.format(record)})


def _report(report: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the gateway died: nobody to tell, the rows are written anyway
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of the run


def settle_gc(young: int = GC_YOUNG) -> None:
    """Keep the cyclic collector off the start-up's objects, and run it less often.

    What the writer makes per row (tuples, dicts, strings) is freed by reference counting:
    its rows hold no cycles. The collector still ran a young collection every 700 new
    objects, and now and then a full one walking every object of the start-up (modules,
    SQLAlchemy's, pydantic's: ~80,000), ~1.5 µs a row of ~23 under load. Frozen, those are
    never walked again; with `young` objects between collections, a steady stream of rows
    runs none (the buffer growing while the store is away still does).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *gc.get_threshold()[1:])


class Pipe:
    """Length-prefixed frames from a file descriptor, read without waiting past a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ended = False
        self._data = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)

    def frames(self, timeout_s: float | None) -> list[tuple[bytes, bytes]]:
        """The whole frames that arrived within `timeout_s` (None: until data or the end)."""
        if self.ended or not self._selector.select(timeout_s):
            return []
        data = os.read(self.fd, _READ_BYTES)
        if not data:
            self.ended = True  # the gateway closed the pipe, or died
            return []
        self._data += data
        return self._take()

    def _take(self) -> list[tuple[bytes, bytes]]:
        data, start, frames = self._data, 0, []
        with memoryview(data) as view:
            while len(data) - start >= 4:
                end = start + 4 + int.from_bytes(view[start : start + 4], "big")
                if end > len(data):
                    break
                frames.append((bytes(view[start + 4 : start + 5]), bytes(view[start + 5 : end])))
                start = end
        del data[:start]
        return frames


class ChildWriter:
    """The writer process's state: rows received and not yet written, counts, flushes."""

    def __init__(self, engine: Engine, config: LoggingConfig, pipe: Pipe) -> None:
        self.engine = engine
        self.pipe = pipe
        self.batch_size = config.batch_size
        self.buffer_size = config.buffer_size
        self.interval_s = config.flush_interval_s
        self.sampling = StableSampling(config)
        self.rng = random.Random()
        self.finish = Finisher(InputPolicy(config))
        # one connection for the writer's life: no pool checkout and return per batch
        self.connection = HeldConnection(engine)
        self.insert: Callable[[Sequence[PredictionRecord]], int] = self.connection.write_batch
        self.buffer: collections.deque[LogRecord] = collections.deque()
        # when the buffer last went from empty to not: none of its rows is older
        self.oldest = 0.0
        self.received = 0
        self.written = self.dropped = self.write_errors = self.sampled_out = 0
        self.flushes: collections.deque[tuple[int, int]] = collections.deque()  # (id, rows)
        self.end_timeout_s = END_TIMEOUT_S
        self.deadline = float("inf")  # set at the pipe's end: when to give up on the store
        self._reported: dict[str, int] = {}
        self._reported_at = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "written": self.written, "dropped": self.dropped, "errors": self.write_errors,
            "sampled": self.sampled_out,
        }  # fmt: skip

    def run(self) -> None:
        """Read and write until the pipe ends, then write what is left (until the deadline)."""
        while not self.pipe.ended:
            self.receive(self.pipe.frames(self._wait()))
            self.write_batches()
            self.acknowledge()
            self.report(every_s=self.interval_s)
        self.write_batches(final=True)
        if self.buffer:
            lost = len(self.buffer)
            self.buffer.clear()
            self.count_dropped(lost)
            log.error("prediction log closed with %d rows unwritten (store unavailable)", lost)
        self.acknowledge()
        self.report()

    def _wait(self) -> float | None:
        """How long the pipe may be waited on: until a partial batch or a report is due."""
        now, due = time.monotonic(), float("inf")
        if self.buffer:
            due = self.oldest + self.interval_s
        if self.counts() != self._reported:
            due = min(due, self._reported_at + self.interval_s)
        return None if due == float("inf") else max(0.0, due - now)

    def receive(self, frames: list[tuple[bytes, bytes]]) -> None:
        for kind, payload in frames:
            if kind == ROWS:
                rows = pickle.loads(payload)
                self.received += len(rows)
                if not self.buffer:
                    self.oldest = time.monotonic()
                for row in rows:
                    self.submit(record_of(row))
            elif kind == FLUSH:
                self.flushes.append((int(payload), self.received))
            elif kind == END:
                self.end_timeout_s = float(json.loads(payload)["timeout_s"])
        if self.pipe.ended and self.deadline == float("inf"):
            self.deadline = time.monotonic() + self.end_timeout_s

    def submit(self, record: LogRecord) -> None:
        if len(self.buffer) >= self.buffer_size:
            self.count_dropped(1)
        elif not self.sampling.keep(record, self.rng):
            self.sampled_out += 1
        else:
            self.buffer.append(record)

    def write_batches(self, *, final: bool = False) -> None:
        """Write the buffer a batch at a time, each reported when done: whole batches, and
        the rest once its oldest row waited `flush_interval_s`, a flush asks, or at the end."""
        buffer = self.buffer
        while buffer and time.monotonic() < self.deadline:
            waits = not (final or self.flushes) and time.monotonic() < self.oldest + self.interval_s
            if waits and len(buffer) < self.batch_size:  # a partial batch, not due yet
                return
            taken = [buffer.popleft() for _ in range(min(self.batch_size, len(buffer)))]
            self.write(self.finish(taken))  # decoded once, before any retry
            self.report()

    def write(self, batch: list[PredictionRecord]) -> None:
        """One batch through `write_steps`; its backoff waits read the pipe meanwhile."""
        steps = write_steps(batch, self, lambda: self.deadline)
        answer: int | BaseException | None = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            if isinstance(step, Insert):
                try:
                    answer = self.insert(step.rows)
                except Exception as error:
                    answer = error
            else:
                self.pause(step.seconds)
                answer = None

    def pause(self, seconds: float) -> None:
        """Receive frames for `seconds` (a backoff: the gateway's writes must not wait)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self.pipe.ended:
                time.sleep(left)
                return
            self.receive(self.pipe.frames(left))
            self.report(every_s=self.interval_s)

    def acknowledge(self) -> None:
        """Report each flush whose rows (all received before it) are written or dropped."""
        done = self.written + self.dropped + self.sampled_out
        while self.flushes and self.flushes[0][1] <= done:
            flush_id, _ = self.flushes.popleft()
            _report({**self.counts(), "flushed": flush_id})

    def report(self, every_s: float = 0.0) -> None:
        """The counts, when they changed (and `every_s` passed since the last report)."""
        now = time.monotonic()
        if now - self._reported_at < every_s:
            return
        counts = self.counts()
        if counts != self._reported:
            _report(counts)
            self._reported, self._reported_at = counts, now

    def count_written(self, n: int) -> None:
        self.written += n

    def count_error(self) -> None:
        self.write_errors += 1

    def count_dropped(self, n: int) -> None:
        self.dropped += n


def main() -> None:
    pipe = Pipe(sys.stdin.fileno())
    frames: list[tuple[bytes, bytes]] = []
    while not frames and not pipe.ended:
        frames = pipe.frames(None)
    if not frames:
        return  # the gateway went before it sent the settings
    kind, payload = frames.pop(0)
    assert kind == CONFIG, kind
    settings = json.loads(payload)
    config = LoggingConfig(**settings["logging"])
    from coalmine.store.engine import open_engine  # after the settings: SQLAlchemy's import

    engine = open_engine(settings["url"], migrate=False)
    writer = ChildWriter(engine, config, pipe)
    settle_gc()
    _report({"ready": True})
    writer.receive(frames)  # any that came with the settings
    try:
        writer.run()
    finally:
        writer.connection.close()
        engine.dispose()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = _Reports()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its "setup plugin" lines: noise
    main()
