"""ProcessWriter against a real SQLite store and its real child process: every accepted
record lands, field for field; a full buffer drops and counts; the child's failures are
reported back (counts and log lines)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coalmine.log import metrics
from coalmine.log.process_writer import ProcessWriter
from coalmine.store.engine import open_engine
from coalmine.store.predictions import count, read_since
from tests.log.test_writer import config, record


async def test_every_submitted_record_is_written_by_the_child_on_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    writer = ProcessWriter(url, config(batch_size=50))
    await writer.start()
    records = [record(i, scores=[0.1, 0.9] if i % 2 else None) for i in range(1_000)]
    assert all(writer.submit(r) for r in records[:400])
    await writer.flush()  # visible now, without a close
    assert count(engine) == 400
    assert all(writer.submit(r) for r in records[400:])
    await writer.close()
    assert (writer.written, writer.dropped, writer.buffered()) == (1_000, 0, 0)
    rows = {r.request_id: r for r in read_since(engine, limit=2_000)}
    assert sorted(rows) == sorted(r.request_id for r in records)
    first = rows["r1"]
    assert (first.model, first.version, first.role, first.status) == ("iris", "v1", "stable", 200)
    assert first.slices == '{"device":"ios"}' and first.scores == "[0.1,0.9]"
    assert writer.submit(record(5_000)) is False  # closed: refused and counted
    assert writer.dropped == 1


async def test_a_full_buffer_drops_and_counts_what_it_cannot_hold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    writer = ProcessWriter(url, config(buffer_size=100))
    await writer.start()
    before = metrics.DROPPED._value.get()
    # no await between them: nothing can be written meanwhile, so the buffer fills
    accepted = [writer.submit(record(i)) for i in range(250)]
    assert accepted == [True] * 100 + [False] * 150
    await writer.close()
    assert (writer.written, writer.dropped) == (100, 150)
    assert metrics.DROPPED._value.get() - before == 150
    assert count(engine) == 100


async def test_the_childs_failures_are_counted_and_logged_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a store whose table is gone: every batch, and then every row, is rejected
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE predictions")
    caplog.set_level(logging.WARNING, logger="coalmine.log.writer")
    writer = ProcessWriter(url, config())
    await writer.start()
    for i in range(3):
        writer.submit(record(i))
    await writer.close(timeout_s=5)
    assert writer.written == 0 and writer.dropped == 3 and writer.write_errors >= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("no such table" in m for m in messages), messages


async def test_stable_rows_sampled_out_by_the_child_leave_the_buffer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    writer = ProcessWriter(url, config(stable_sample_rate=0.25, buffer_size=500))
    await writer.start()
    stable = [record(i, role="stable", rollout_id=None) for i in range(400)]
    assert all(writer.submit(r) for r in stable)
    await writer.flush()
    assert writer.buffered() == 0  # not held as if still waiting to be written
    assert writer.written + writer.sampled_out == 400 and writer.sampled_out > 200
    assert all(writer.submit(r) for r in stable)  # room again: nothing dropped
    await writer.close()
    assert writer.dropped == 0 and count(engine) == writer.written


def test_rows_are_written_when_the_gateway_died_before_the_childs_last_report(
    tmp_path: Path,
) -> None:
    """A gateway that dies closes both pipes: the child still writes what it was given and
    exits cleanly (its last report used to raise BrokenPipeError with a traceback)."""
    import json
    import pickle
    import subprocess
    import sys

    from coalmine.log.process_writer import CONFIG, FIELDS, ROWS, frame

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    child = subprocess.Popen(
        [sys.executable, "-m", "coalmine.log.writer_child"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    settings = {"url": url, "logging": config(batch_size=50).model_dump()}
    child.stdin.write(frame(CONFIG, json.dumps(settings).encode()))
    child.stdin.flush()
    while b"ready" not in (line := child.stdout.readline()):
        assert line, "the writer exited before it was ready"
    rows = [tuple(getattr(record(i), f) for f in FIELDS) for i in range(120)]
    child.stdout.close()  # the gateway is gone: nobody reads the reports any more
    child.stdin.write(frame(ROWS, pickle.dumps(rows)))
    child.stdin.close()
    assert child.wait(timeout=60) == 0
    assert child.stderr is not None
    err = child.stderr.read().decode()
    child.stderr.close()
    assert "Traceback" not in err, err
    assert count(engine) == 120


async def test_a_store_that_is_not_there_yet_is_retried_while_rows_keep_coming(
    tmp_path: Path,
) -> None:
    """The child backs off from a store it cannot open and keeps reading the pipe meanwhile:
    rows sent during the outage are all written once the store is there, none dropped, and
    a flush asked for during the outage is answered after they are."""
    import asyncio

    url = f"sqlite:///{tmp_path / 'later' / 'log.db'}"  # its directory does not exist yet
    writer = ProcessWriter(url, config(batch_size=20))
    await writer.start()
    for i in range(50):
        writer.submit(record(i))
    while writer.write_errors < 2:  # failing, and saying so while it backs off
        await asyncio.sleep(0.02)
    for i in range(50, 300):  # received while it waits to retry
        writer.submit(record(i))
    flushed = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(0.2)
    assert not flushed.done()  # the rows before it are not written yet
    (tmp_path / "later").mkdir()
    open_engine(url).dispose()
    await flushed
    assert (writer.written, writer.dropped, writer.buffered()) == (300, 0, 0)
    await writer.close()
    assert count(open_engine(url)) == 300


async def test_rows_are_written_within_the_flush_interval_without_a_flush(
    tmp_path: Path,
) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    writer = ProcessWriter(url, config(batch_size=10_000, flush_interval_s=0.05))
    await writer.start()
    for round_ in range(3):  # a partial batch each time, written once it waited the interval
        for i in range(7):
            writer.submit(record(round_ * 10 + i))
        for _ in range(500):
            if count(engine) == 7 * (round_ + 1):
                break
            await asyncio.sleep(0.01)
        assert count(engine) == 7 * (round_ + 1)
    # reported without a flush too: the child reports after its commit, so the rows can be
    # seen before its report is read (the test read it too soon in 2 runs of 12)
    for _ in range(500):
        if writer.written == 21:
            break
        await asyncio.sleep(0.01)
    assert writer.written == 21
    await writer.close()
