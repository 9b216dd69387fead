"""POST /v1/feedback on a real aiohttp server on loopback, backed by a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import create_engine

from coalmine.log.feedback_http import MAX_ITEMS, make_feedback_handler
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.feedback import FeedbackStore, joined
from coalmine.store.predictions import insert_batch


def served(request_id: str) -> PredictionRecord:
    return PredictionRecord(request_id, "iris", "v1", "stable", 1.0, 1.0, 200, prediction=[1])


@pytest.fixture
async def feedback_url(tmp_path: Path) -> AsyncIterator[tuple[str, FeedbackStore]]:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    insert_batch(engine, [served("r1"), served("r2")])
    store = FeedbackStore(engine)
    app = web.Application()
    app.router.add_post("/v1/feedback", make_feedback_handler(store))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/v1/feedback")), store
    finally:
        await server.close()
        engine.dispose()


async def post(url: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r1", "label": 1},
        [{"request_id": "r1", "label": 1}],
        {"items": [{"request_id": "r1", "label": 1}]},
    ],
)
async def test_one_item_a_list_or_items_are_accepted(
    feedback_url: tuple[str, FeedbackStore], body: object
) -> None:
    url, store = feedback_url
    status, out = await post(url, json=body)
    assert (status, out["accepted"], out["errors"]) == (200, 1, [])
    assert [r.label for r in joined(store.engine, "iris")] == [1]


async def test_mixed_batch_reports_per_item_errors(feedback_url: tuple[str, FeedbackStore]) -> None:
    url, store = feedback_url
    status, out = await post(
        url,
        json=[
            {"request_id": "r2", "outcomes": {"clicked": 1}},
            {"request_id": "nope", "label": 1},
            {"request_id": "r1", "label": 1, "extra": True},
        ],
    )
    assert status == 200
    assert out["accepted"] == 1
    errors = out["errors"]
    assert isinstance(errors, list)
    assert [(e["index"], e["request_id"]) for e in errors] == [(1, "nope"), (2, "r1")]
    assert errors[0]["error"] == "unknown request_id"
    assert "extra" in errors[1]["error"]
    results = out["results"]
    assert isinstance(results, list)
    assert [r["status"] for r in results] == ["stored", "error", "error"]
    assert [(r.request_id, r.outcomes) for r in joined(store.engine, "iris")] == [
        ("r2", {"clicked": 1.0})
    ]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'"a string"', 400, "expected an object"),
        (b"[]", 400, "no feedback items"),
        (b'{"items": {"request_id": "r1"}}', 400, "expected an object"),
        (b"[" + b",".join([b"{}"] * (MAX_ITEMS + 1)) + b"]", 413, "at most"),
    ],
)
async def test_unreadable_requests_are_4xx_and_store_nothing(
    feedback_url: tuple[str, FeedbackStore], data: bytes, status: int, reason: str
) -> None:
    url, store = feedback_url
    got, out = await post(url, data=data, headers={"Content-Type": "application/json"})
    assert got == status
    assert reason in str(out["error"])
    assert joined(store.engine, "iris") == []


async def test_an_unreachable_store_is_a_503(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'c.db'}")
    app = web.Application()
    app.router.add_post("/v1/feedback", make_feedback_handler(FeedbackStore(engine)))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        status, out = await post(
            str(server.make_url("/v1/feedback")), json={"request_id": "r1", "label": 1}
        )
    finally:
        await server.close()
        engine.dispose()
    assert status == 503
    assert "nothing was stored" in str(out["error"])


async def test_a_label_racing_its_batched_prediction_is_stored_after_the_grace(
    tmp_path: Path,
) -> None:
    """The prediction row lands in the store while the label's first lookup has missed it:
    the label is still accepted (no client retry), and a true unknown is still an error."""
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    store = FeedbackStore(engine)
    app = web.Application()
    app.router.add_post("/v1/feedback", make_feedback_handler(store, grace_s=0.5))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = str(server.make_url("/v1/feedback"))
        body = [{"request_id": "late", "label": 1}, {"request_id": "never", "label": 0}]
        posting = asyncio.create_task(post(url, json=body))
        await asyncio.sleep(0.2)  # the first lookup has happened; now the batch is written
        await asyncio.to_thread(insert_batch, engine, [served("late")])
        status, out = await posting
        assert status == 200 and out["accepted"] == 1
        assert [(e["index"], e["request_id"]) for e in out["errors"]] == [(1, "never")]  # type: ignore[union-attr]
        assert [(r.request_id, r.label) for r in joined(engine, "iris")] == [("late", 1)]
    finally:
        await server.close()
        engine.dispose()
