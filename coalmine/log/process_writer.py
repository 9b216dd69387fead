"""The prediction log written by a child process: the gateway only hands over tuples.

`ProcessWriter` is a `PredictionSink` like `BatchWriter`, whose work it moves out of the
gateway's process: `submit()` keeps the record as a plain tuple; every few milliseconds the
tuples go down a pipe to `python -m coalmine.log.writer_child` in one pickled frame, and the
child decodes (a `RawRecord`'s answer and deferred input), encodes and writes them in batches
as `BatchWriter` does (`coalmine.log.batches`: COPY on PostgreSQL, retries, row by row for a
rejected batch), in one plain loop. A tuple's length tells the child which kind of record
it is. Measured, this is cheaper per request than the writer thread: the thread's batches
held the GIL, and every hand-off of it (each `to_thread`, each syscall that releases it)
stalled the event loop for up to a switch interval; the pipe costs one pickle and one write
per frame.

What it keeps of `BatchWriter`'s contract:
- never blocks, never raises; past `buffer_size` rows not yet written (here and in the
  child) a record is dropped and counted, and so is whatever the child drops;
- `close()` (the gateway's SIGTERM path) sends everything, closes the pipe, and waits for
  the child to write it all: a graceful stop loses nothing. The child ignores SIGINT and
  SIGTERM (it runs in its own session) and stops on the pipe's end, so it also flushes when
  the gateway dies;
- `written`, `dropped`, `write_errors` and the coalmine_log_* metrics are this process's,
  from the child's reports; the child's log lines are logged here again under its logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import operator
import pickle
import struct
import sys
from typing import Any

from coalmine.config import LoggingConfig
from coalmine.log import metrics
from coalmine.log.record import LogRecord, PredictionRecord, RawRecord

__all__ = ["FIELDS", "RAW_FIELDS", "ProcessWriter", "frame", "record_of"]

log = logging.getLogger("coalmine.log.writer")

FIELDS = tuple(PredictionRecord.__dataclass_fields__)  # a decoded record's tuple
RAW_FIELDS = tuple(RawRecord.__dataclass_fields__)  # a raw record's tuple
assert len(FIELDS) != len(RAW_FIELDS)  # the length tells them apart
_as_tuple = operator.attrgetter(*FIELDS)
_raw_as_tuple = operator.attrgetter(*RAW_FIELDS)
_LENGTH = struct.Struct(">I")
SEND_INTERVAL_S = 0.005  # how long a record may wait before its frame goes
SEND_ROWS = 256  # or as soon as this many are waiting
START_TIMEOUT_S = 120.0
ROWS, FLUSH, CONFIG, END = b"R", b"F", b"C", b"E"  # frame kinds


def frame(kind: bytes, payload: bytes) -> bytes:
    """A frame on the pipe: its length, its kind, its payload."""
    return _LENGTH.pack(len(payload) + 1) + kind + payload


def record_of(row: tuple[Any, ...]) -> LogRecord:
    """The record a tuple on the pipe stands for (in the child)."""
    return RawRecord(*row) if len(row) == len(RAW_FIELDS) else PredictionRecord(*row)


class ProcessWriter:
    """A `PredictionSink` whose rows a child process writes to `store_url`."""

    def __init__(self, store_url: str, config: LoggingConfig) -> None:
        self.store_url = store_url
        self.config = config
        self.buffer_size = config.buffer_size
        self._pending: list[tuple[Any, ...]] = []
        self._sent = 0  # rows handed to the child
        self._child_done = 0  # of those, written or dropped by the child
        self._process: asyncio.subprocess.Process | None = None
        self._status: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes: dict[int, asyncio.Future[None]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._flush_seq = 0
        self._closed = False
        self._dead = False
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self.sampled_out = 0  # stable rows the child's sampling did not keep (not a loss)
        self._child_dropped = 0
        metrics.track_buffer(self)

    def buffered(self) -> int:
        """Rows accepted but not yet written (here, in the pipe, or in the child)."""
        return len(self._pending) + self._sent - self._child_done

    def submit(self, record: LogRecord) -> bool:
        """Queue one record; False when it was dropped. Never blocks, never raises."""
        try:
            pending = self._pending
            if self._closed or self._dead or self.buffered() >= self.buffer_size:
                self._drop(1)
                return False
            pending.append(
                _raw_as_tuple(record) if type(record) is RawRecord else _as_tuple(record)
            )
            if len(pending) >= SEND_ROWS:
                self._send()
            elif self._timer is None and self._loop is not None:
                self._timer = self._loop.call_later(SEND_INTERVAL_S, self._send)
            return True
        except Exception:  # the production path must never fail because of the log
            log.exception("prediction log submit failed")
            return False

    async def start(self) -> None:
        """Start the child (idempotent); it connects to the store on its own."""
        if self._process is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coalmine.log.writer_child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or a group SIGTERM must not stop it mid-batch
        )  # fmt: skip
        settings = {"url": self.store_url, "logging": self.config.model_dump()}
        # the store URL (a password, maybe) goes down the pipe, never on a command line
        self._write(frame(CONFIG, json.dumps(settings).encode()))
        self._ready = self._loop.create_future()
        self._status = asyncio.create_task(self._read_status(), name="coalmine-log-status")
        # ready once it holds a store connection: rows then reach the store within a flush
        # interval from the first request on (feedback joins count on it)
        async with asyncio.timeout(START_TIMEOUT_S):
            await asyncio.shield(self._ready)
        if self._dead:
            raise RuntimeError("the prediction log's writer process exited at start")

    def _write(self, data: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(data)

    def _send(self) -> None:
        self._timer = None
        pending = self._pending
        if not pending or self._process is None:
            return
        if self._dead:
            self._drop(len(pending))
            pending.clear()
            return
        self._pending = []
        self._write(frame(ROWS, pickle.dumps(pending, pickle.HIGHEST_PROTOCOL)))
        self._sent += len(pending)

    async def flush(self) -> None:
        """Return once every row submitted so far is written (or dropped)."""
        if self._process is None or self._dead:
            return
        self._send()
        self._flush_seq += 1
        waiter = self._flushes[self._flush_seq] = asyncio.get_running_loop().create_future()
        self._write(frame(FLUSH, str(self._flush_seq).encode()))
        await waiter

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, send everything, and wait for the child to write it all.

        The child retries a failing store for `timeout_s`; what it cannot write by then is
        dropped, counted and logged as an error rather than hanging the shutdown forever.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        process = self._process
        if process is None:
            self._drop(len(self._pending))
            self._pending.clear()
            return
        self._send()
        assert process.stdin is not None
        process.stdin.write(frame(END, json.dumps({"timeout_s": timeout_s}).encode()))
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        try:
            async with asyncio.timeout(timeout_s + 10):
                await process.wait()
                if self._status is not None:
                    await self._status
        except TimeoutError:
            process.kill()
            await process.wait()
        lost = self._sent - self._child_done
        if lost > 0:
            self._child_done += lost
            self._drop(lost)
            log.error("prediction log closed with %d rows unwritten (writer process)", lost)

    async def _read_status(self) -> None:
        """The child's reports: counts, flush acknowledgements and log lines."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while line := await stdout.readline():
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if "ready" in report and self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            if "log" in report:
                log.log(int(report["log"]), "%s", report["message"])
            if "written" in report:
                self._counts(report)
            if "flushed" in report:
                waiter = self._flushes.pop(int(report["flushed"]), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        if not self._closed:
            self._dead = True
            log.error("prediction log writer process exited (status %s)", self._process.returncode)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        for waiter in self._flushes.values():
            if not waiter.done():
                waiter.set_result(None)
        self._flushes.clear()

    def _counts(self, report: dict[str, Any]) -> None:
        written, dropped = int(report["written"]), int(report["dropped"])
        errors = int(report["errors"])
        if written > self.written:
            metrics.WRITTEN.inc(written - self.written)
        if errors > self.write_errors:
            metrics.WRITE_ERRORS.inc(errors - self.write_errors)
        if dropped > self._child_dropped:
            self._drop(dropped - self._child_dropped)
            self._child_dropped = dropped
        self.written, self.write_errors = written, errors
        self.sampled_out = int(report.get("sampled", 0))
        self._child_done = written + dropped + self.sampled_out

    def _drop(self, n: int) -> None:
        if n:
            self.dropped += n
            metrics.DROPPED.inc(n)
