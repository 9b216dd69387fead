"""Deeply nested JSON, sent by a client or answered by a model, is never a 500: a body the
gateway must read is refused with 400 (and one log line), an answer it cannot read is
passed through and logged without a prediction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from aiohttp import web

from coalmine.gateway import app
from coalmine.log.policy import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded
from coalmine.log.throttle import ThrottledLog
from tests.gateway.conftest import StartGateway, Upstream, make_config, serve_app

V1 = "/v1/models/m:predict"


@pytest.fixture(autouse=True)
def _fresh_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    # the rate limit is per process: each test starts with its line not yet logged
    monkeypatch.setattr(app, "_throttled", ThrottledLog(app.log))


def nested(depth: int) -> bytes:
    """{"instances": [[[...[1]...]]]} with `depth` levels in all."""
    return b'{"instances": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


def test_loads_bounded_refuses_past_the_depth_limit() -> None:
    assert json.dumps(loads_bounded(nested(MAX_JSON_DEPTH))).count("[") == MAX_JSON_DEPTH - 1
    wide = {"a": [[1, 2]] * 500, "b": {"c": [{"d": 1}] * 500}}  # many brackets, shallow
    assert loads_bounded(json.dumps(wide)) == wide
    for depth in (MAX_JSON_DEPTH + 1, 100_000):  # the second is past json's own recursion
        with pytest.raises(JsonTooDeep, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            loads_bounded(nested(depth))
        with pytest.raises(JsonTooDeep):
            loads_bounded(nested(depth).decode())
    with pytest.raises(ValueError):
        loads_bounded(b'{"instances": [1}')  # unreadable: json's own error, as before


@pytest.mark.parametrize(
    "reads",
    [
        {"routing": {"sticky": {"json_field": "user"}}},
        {"slices": [{"name": "device", "json_field": "instances.0.device"}]},
        {"logging": {"inputs": "redacted", "redact_fields": ["email"]}},
        {"logging": {"inputs": "hashed"}},
    ],
    ids=["sticky", "slice", "redacted", "hashed"],
)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 50_000])
async def test_a_body_nested_too_deep_to_read_is_a_400_and_one_log_line(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
    reads: dict[str, object],
    depth: int,
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, **reads)  # type: ignore[arg-type]
    gw = await start_gateway(config)
    status, headers, body = await gw.post(V1, nested(depth), {"X-Request-ID": "deep-1"})
    assert status == 400, body
    assert json.loads(body) == {
        "error": f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    }
    assert headers["X-Request-ID"] == "deep-1"
    assert upstreams["v1"].seen == []  # refused, not forwarded
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("request deep-1 refused: JSON nested deeper" in line for line in lines), lines
    # as deep as allowed is served as usual
    status, _, _ = await gw.post(V1, nested(MAX_JSON_DEPTH))
    assert status == 200


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 50_000])
async def test_feedback_nested_too_deep_is_a_400(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, depth: int
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    label = b"[" * depth + b"1" + b"]" * depth
    status, _, body = await gw.post(
        "/v1/feedback", b'{"request_id": "r1", "label": ' + label + b"}"
    )
    assert status == 400, body
    assert f"JSON nested deeper than {MAX_JSON_DEPTH} levels" in json.loads(body)["error"]


async def test_a_model_answer_nested_beyond_reading_is_passed_through_without_a_prediction(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    answer = b"[" * 50_000 + b"]" * 50_000

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner, url = await serve_app(app)
    try:
        gw = await start_gateway(make_config(tmp_path, {"v1": url}))
        status, _, body = await gw.post(V1)
        assert (status, body) == (200, answer)
        await gw.stop()
        rows = gw.rows()
        assert [(r.role, r.status, r.prediction) for r in rows] == [("stable", 200, None)]
    finally:
        await runner.cleanup()
