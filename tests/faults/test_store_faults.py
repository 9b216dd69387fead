"""The store locked by another process while traffic flows: the production path answers as
usual, and the log rows wait in the buffer and are written once the lock goes (none lost,
none dropped)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from coalmine.modelserver import ModelServerHandle
from tests.faults.conftest import IRIS_ROW
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
