"""The prediction log's writer process (`python -m coalmine.log.writer_child`).

Started by `ProcessWriter`: reads frames from stdin (settings first, then pickled lists of
record tuples, flush requests, and the end), writes the records with a `BatchWriter` (which
decodes the gateway's raw answers: the model's bytes are only ever read as JSON or binary
tensors, never unpickled — inside a frame they are a `bytes` value), and
reports on stdout, one JSON object a line: its counts after every write, each flush done,
and its log lines (logged again by the gateway). SIGINT and SIGTERM are ignored: it stops
when the gateway closes the pipe (or dies), after writing everything it was given.

The frames come from the gateway process that started it, over a pipe no one else holds;
they are unpickled here for that reason only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import sys
from typing import Any

from coalmine.config import LoggingConfig
from coalmine.log.process_writer import CONFIG, END, FLUSH, ROWS, record_of
from coalmine.log.writer import BatchWriter


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


def _counts(writer: BatchWriter) -> dict[str, int]:
    return {
        "written": writer.written, "dropped": writer.dropped, "errors": writer.write_errors,
        "sampled": writer.sampled_out,
    }  # fmt: skip


async def _frames(reader: asyncio.StreamReader) -> Any:
    while True:
        try:
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big"))
        except asyncio.IncompleteReadError:
            return  # the gateway closed the pipe, or died
        yield body[:1], body[1:]


async def _reporter(writer: BatchWriter, interval_s: float) -> None:
    last: dict[str, int] = {}
    while True:
        await asyncio.sleep(interval_s)
        counts = _counts(writer)
        if counts != last:
            _report(counts)
            last = counts


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    frames = _frames(reader)
    kind, payload = await anext(frames)
    assert kind == CONFIG, kind
    settings = json.loads(payload)
    config = LoggingConfig(**settings["logging"])
    from coalmine.store.engine import open_engine  # after the settings: SQLAlchemy's import

    engine = await asyncio.to_thread(open_engine, settings["url"], migrate=False)
    writer = BatchWriter(engine, config)
    await writer.start()
    reporter = asyncio.create_task(_reporter(writer, config.flush_interval_s))
    _report({"ready": True})
    timeout_s = 30.0
    received = 0
    async for kind, payload in frames:
        if kind == ROWS:
            rows = pickle.loads(payload)
            received += len(rows)
            for row in rows:
                writer.submit(record_of(row))
        elif kind == FLUSH:
            await writer.flush()
            # a batch the writer's own task took may still be in flight: wait for it too
            while writer.written + writer.dropped + writer.sampled_out < received:
                await asyncio.sleep(0.005)
            _report({**_counts(writer), "flushed": int(payload)})
        elif kind == END:
            timeout_s = float(json.loads(payload)["timeout_s"])
    await writer.close(timeout_s)
    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter
    _report(_counts(writer))
    await asyncio.to_thread(engine.dispose)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = _Reports()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its "setup plugin" lines: noise
    asyncio.run(main())
