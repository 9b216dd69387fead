"""The store locked by another process, its disk full, or PostgreSQL restarted, while
traffic flows: the production path answers as usual, and the log rows wait in the buffer
and are written once the fault goes (none lost, none dropped)."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coalmine.modelserver import ModelServerHandle
from coalmine.store.engine import open_engine
from tests.faults.conftest import IRIS_ROW, OwnPostgres
from tests.gateway.conftest import StartGateway, make_config

LOCK_S = 5.0
_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.mark.slow  # a five-second lock, by design
async def test_a_store_locked_for_five_seconds_loses_no_log_row(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path, {"v1": stable_server.url})
    gw = await start_gateway(config)
    caplog.set_level(logging.WARNING, logger="coalmine.log.writer")
    locker = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "coalmine.db"), str(LOCK_S)],
        stdout=subprocess.PIPE,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline() == b"locked\n"
        statuses = []
        for i in range(100):  # spread over the lock
            status, _, _ = await gw.post(
                "/v1/models/m:predict", {"instances": [IRIS_ROW]}, {"X-Request-ID": f"l-{i}"}
            )
            statuses.append(status)
            await asyncio.sleep(LOCK_S / 150)
        assert locker.poll() is None  # all of it sent while the store was locked
        assert statuses == [200] * 100
        assert await asyncio.to_thread(locker.wait, 30) == 0
    finally:
        locker.kill()
        locker.wait()
        if locker.stdout is not None:
            locker.stdout.close()
    writer = gw.runner.gateway.writer
    await gw.stop()
    assert writer.dropped == 0
    assert sorted(r.request_id for r in gw.rows()) == sorted(f"l-{i}" for i in range(100))
    # the writer waited (or retried) off the event loop: nothing worse than a warning
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only: skipped elsewhere), unmounted after the test."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(path: Path) -> None:
    """Write `path` until the disk is full."""
    with open(path, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


async def test_a_full_disk_under_the_log_leaves_production_alone_and_the_rows_wait(
    tmp_path: Path,
    small_disk: Path,
    stable_server: ModelServerHandle,
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path, {"v1": stable_server.url})
    url = f"sqlite:///{small_disk / 'coalmine.db'}"
    config = config.model_copy(update={"store": config.store.model_copy(update={"url": url})})
    gw = await start_gateway(config)
    writer = gw.runner.gateway.writer
    caplog.set_level(logging.WARNING, logger="coalmine.log.writer")
    filler = small_disk / "filler"
    _fill(filler)
    statuses = []
    for i in range(50):
        status, _, _ = await gw.post(
            "/v1/models/m:predict", {"instances": [IRIS_ROW]}, {"X-Request-ID": f"full-{i}"}
        )
        statuses.append(status)
    assert statuses == [200] * 50  # the production path does not notice
    async with asyncio.timeout(20):
        while writer.write_errors == 0:
            await asyncio.sleep(0.05)
    assert writer.written == 0  # the rows wait in the buffer
    failures = [r.getMessage() for r in caplog.records if "write failed" in r.getMessage()]
    assert failures and "database or disk is full" in failures[0]
    filler.unlink()  # space again: the buffered rows go out
    async with asyncio.timeout(20):
        while writer.written < 50:
            await asyncio.sleep(0.05)
    await gw.stop()
    assert writer.dropped == 0
    assert sorted(r.request_id for r in gw.rows()) == sorted(f"full-{i}" for i in range(50))


@pytest.mark.slow  # a server of its own: initdb, start, restart
async def test_postgresql_restarted_mid_traffic_loses_no_log_row(
    tmp_path: Path,
    own_postgres: OwnPostgres,
    stable_server: ModelServerHandle,
    start_gateway: StartGateway,
) -> None:
    open_engine(own_postgres.url).dispose()  # migrate
    config = make_config(tmp_path, {"v1": stable_server.url})
    url = own_postgres.url
    config = config.model_copy(update={"store": config.store.model_copy(update={"url": url})})
    gw = await start_gateway(config)
    writer = gw.runner.gateway.writer
    statuses: list[int] = []

    async def traffic(n: int, prefix: str) -> None:
        for i in range(n):
            status, _, _ = await gw.post(
                "/v1/models/m:predict", {"instances": [IRIS_ROW]}, {"X-Request-ID": f"{prefix}{i}"}
            )
            statuses.append(status)
            await asyncio.sleep(0.01)

    await traffic(50, "pg-before-")
    async with asyncio.timeout(20):
        while writer.written < 50:  # the first rows are in, on pooled connections
            await asyncio.sleep(0.05)
    restart = asyncio.create_task(asyncio.to_thread(own_postgres.restart))
    await traffic(100, "pg-during-")
    await restart
    await traffic(50, "pg-after-")
    assert statuses == [200] * 200  # the production path never noticed
    await gw.stop()
    assert writer.dropped == 0
    assert len({r.request_id for r in gw.rows()}) == len(gw.rows()) == 200
    assert writer.write_errors > 0  # the writer did meet the server down, and retried
