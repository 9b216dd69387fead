"""The gateway process stopped by SIGTERM under load: every request it answered is in the
prediction log, nothing it did not answer is, and it exits cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
from sqlalchemy import select

from coalmine.modelserver import ModelServerHandle
from coalmine.store.engine import open_engine
from coalmine.store.schema import predictions
from tests.faults.conftest import IRIS_ROW, Serve, serve_config

WORKERS = 8


async def test_sigterm_under_load_logs_every_answered_request(
    tmp_path: Path, stable_server: ModelServerHandle, serve: Callable[..., Serve]
) -> None:
    config = serve_config(
        tmp_path,
        {"v1": stable_server.url},
        # nothing reaches the store before the stop unless the stop flushes it
        logging={"flush_interval_s": 60, "batch_size": 100_000},
    )
    handle = serve(config, "--no-api", "--no-controller")
    answered: list[str] = []
    refused = 0
    stopping = asyncio.Event()

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal refused
        i = 0
        while True:
            rid = f"w{w}-{i}"
            i += 1
            try:
                async with session.post(
                    handle.gateway_url + "/v1/models/m:predict",
                    json={"instances": [IRIS_ROW]},
                    headers={"X-Request-ID": rid},
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        answered.append(rid)
            except aiohttp.ClientError:
                refused += 1
                if stopping.is_set():
                    return  # the gateway is gone
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        workers = [asyncio.create_task(worker(w, session)) for w in range(WORKERS)]
        while len(answered) < 300:
            await asyncio.sleep(0.05)
        handle.process.send_signal(signal.SIGTERM)
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    assert await asyncio.to_thread(handle.process.wait, 30) == 0

    engine = open_engine(config["store"]["url"])
    try:
        with engine.connect() as conn:
            logged = [r.request_id for r in conn.execute(select(predictions))]
    finally:
        engine.dispose()
    assert len(answered) >= 300
    assert len(logged) == len(set(logged))  # once each
    assert set(answered) <= set(logged)  # every answered request
    # and nothing else, but for requests in flight as the client gave up on the connection
    assert len(set(logged) - set(answered)) <= WORKERS
    assert "Traceback" not in handle.log()
