"""A webhook URL can carry a secret (a chat service's incoming-webhook path, a token in the
query, credentials in the userinfo): the sender's log lines name only its scheme and host."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coalmine.rollout.store import RolloutRepository
from coalmine.rollout.webhooks import loggable_url
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.rollout.test_rollout_webhooks import (
    CONFIG,
    Receiver,
    advance,
    rows_until,
    sender,
    spec_with,
)

SECRETS = ("S3CRETPATHx9", "QS3CRETq7", "PW5ecret")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_webhook_log_lines_carry_no_secret_of_its_url(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        RouteRepository(engine).seed_from_config(CONFIG)
        repo = RolloutRepository(engine)
        url = f"http://hooks:PW5ecret@127.0.0.1:{receiver.port}/hook/S3CRETPATHx9?token=QS3CRETq7"
        receiver.script = [500, 400]  # retried (INFO), then rejected (WARNING)
        rec = repo.create("iris", "v2", "http://127.0.0.1:10/", spec_with({"url": url}))
        advance(repo, rec, time.time())
        s = sender(engine)
        s.start()
        try:
            await rows_until(s.outbox, ["rejected"])
        finally:
            await s.close()
    finally:
        engine.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "coalmine.rollout.webhooks"]
    assert any("retries" in line for line in lines) and any("rejected" in line for line in lines)
    assert all(f"http://127.0.0.1:{receiver.port}" in line for line in lines), lines
    assert not any(secret in caplog.text for secret in SECRETS), lines


def test_loggable_url_keeps_scheme_host_and_port_only() -> None:
    assert loggable_url("https://u:p@hooks.example.com/services/T/B/X?k=v") == (
        "https://hooks.example.com/…"
    )
    assert loggable_url("http://127.0.0.1:9999") == "http://127.0.0.1:9999"
    assert loggable_url("not a url") == "(unparsable url)"
