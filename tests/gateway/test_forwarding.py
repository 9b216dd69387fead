"""Forwarding: three protocols, headers, bad input, the log rows of plain calls."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.conftest import BODY, StartGateway, Upstream, make_config

PATHS = {
    "v1": "/v1/models/m:predict",
    "v2": "/v2/models/m/infer",
    "plain": "/models/m/predict",
}


@pytest.mark.parametrize("client", ["aiohttp", "httptools"])
@pytest.mark.parametrize("protocol", ["v1", "v2", "plain"])
async def test_protocols_forward_unchanged_and_log_the_prediction(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    protocol: str,
    client: str,
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"upstream_client": client})
    gw = await start_gateway(config)
    status, headers, _ = await gw.post(PATHS[protocol], headers={"X-Request-ID": "req-42"})
    assert status == 200
    assert headers["X-Request-ID"] == "req-42"
    assert headers["X-Model-Version"] == "v1"
    assert headers["Content-Type"].startswith("application/json")
    seen = upstreams["v1"].seen[-1]
    assert seen["path"] == PATHS[protocol].split(":")[0] + (":predict" if protocol == "v1" else "")
    assert json.loads(seen["body"]) == BODY
    assert seen["headers"]["X-Request-ID"] == "req-42"
    await gw.stop()
    (row,) = gw.rows()
    assert (row.request_id, row.model, row.version, row.role) == ("req-42", "m", "v1", "stable")
    assert row.status == 200 and row.error_class is None
    expected = ["label-v1"] if protocol != "plain" else "label-v1"
    assert json.loads(row.prediction) == expected
    assert json.loads(row.input) == BODY


async def test_a_new_request_id_when_the_client_sends_none(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    ids = set()
    for _ in range(3):
        status, headers, _ = await gw.post(PATHS["v1"])
        assert status == 200
        ids.add(headers["X-Request-ID"])
        assert upstreams["v1"].seen[-1]["headers"]["X-Request-ID"] == headers["X-Request-ID"]
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    # time-ordered UUIDv7s of about now (so the log's request_id index grows at its end)
    now_ms = time.time_ns() // 1_000_000
    assert all(uuid.UUID(hex=i).version == 7 for i in ids)
    assert all(abs(int(i[:12], 16) - now_ms) < 60_000 for i in ids)


async def test_unknown_model_is_404_json(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    status, headers, body = await gw.post("/v1/models/nope:predict")
    assert status == 404
    assert "nope" in json.loads(body)["error"]
    assert "X-Request-ID" in headers
    assert upstreams["v1"].seen == []


async def test_body_over_the_limit_is_413_and_not_forwarded(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"max_body_bytes": 1000})
    gw = await start_gateway(config)
    big = {"instances": [[0.5] * 1000]}
    status, _, body = await gw.post(PATHS["v1"], big)
    assert status == 413
    assert "error" in json.loads(body)

    # a chunked body (no Content-Length) is cut off as it streams
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 500

    async with gw.session.post(gw.url + PATHS["v1"], data=chunks()) as resp:
        assert resp.status == 413
    assert upstreams["v1"].seen == []
    status, _, _ = await gw.post(PATHS["v1"])  # and the gateway still serves
    assert status == 200


async def test_the_models_own_4xx_passes_through(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    status, headers, body = await gw.post(PATHS["v1"], {"wrong": 1})
    assert status == 422
    assert json.loads(body) == {"error": "missing instances"}
    assert headers["X-Model-Version"] == "v1"
    await gw.stop()
    (row,) = gw.rows()
    assert (row.status, row.error_class, row.prediction) == (422, "http_4xx", None)


async def test_malformed_json_with_a_json_sticky_key_is_forwarded_not_a_crash(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v2": upstreams["v2"].url},
        routing={"canary": "v2", "canary_weight": 50,
                 "sticky": {"json_field": "instances.0.user_id"}},
        slices=[{"name": "device", "json_field": "instances.0.device"},
                {"name": "region", "header": "X-Region"}],
    )  # fmt: skip
    gw = await start_gateway(config)
    for _ in range(5):
        status, _, _ = await gw.post(PATHS["v1"], b"{not json", {"X-Region": "eu"})
        assert status == 400  # the model's verdict, passed through
    status, _, _ = await gw.post(PATHS["v1"], BODY, {"X-Region": "eu"})
    assert status == 200
    await gw.stop()
    rows = gw.rows()
    assert len(rows) == 6
    assert json.loads(rows[0].slices) == {"device": None, "region": "eu"}
    assert json.loads(rows[-1].slices) == {"device": "ios", "region": "eu"}


async def test_upstream_down_is_502_json_and_logged(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    from tests.gateway.conftest import free_port

    gw = await start_gateway(make_config(tmp_path, {"v1": f"http://127.0.0.1:{free_port()}"}))
    status, headers, body = await gw.post(PATHS["v1"])
    assert status == 502
    assert "connection" in json.loads(body)["error"]
    assert headers["X-Model-Version"] == "v1"
    await gw.stop()
    (row,) = gw.rows()
    assert (row.status, row.error_class) == (0, "connection")


async def test_health_readiness_and_metrics(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    await gw.post(PATHS["v1"])
    async with gw.session.get(gw.url + "/healthz") as resp:
        assert resp.status == 200
    async with gw.session.get(gw.url + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["models"] == ["m"]
    async with gw.session.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'coalmine_gateway_requests_total{model="m",role="stable",version="v1"}' in text
    assert (
        'coalmine_gateway_latency_seconds_bucket{le="+Inf",model="m",role="stable",version="v1"}'
        in text
    )
    assert "coalmine_gateway_latency_seconds_count" in text
    assert "coalmine_gateway_shadow_queue_depth" in text


async def test_feedback_is_served_by_the_data_plane_and_joins_request_ids(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": upstreams["v3"].url},
        routing={"shadow": "v3", "mirror_share": 100},
    )
    gw = await start_gateway(config)
    await gw.post(PATHS["v1"], headers={"X-Request-ID": "r-1"})
    await gw.runner.gateway.mirror.close()  # the shadow row is in the buffer now
    await gw.runner.gateway.writer.flush()  # and in the store
    status, _, body = await gw.post(
        "/v1/feedback", [{"request_id": "r-1", "label": "label-v1"}, {"request_id": "nope"}]
    )
    assert status == 200
    answer = json.loads(body)
    assert answer["accepted"] == 1
    assert [e["request_id"] for e in answer["errors"]] == ["nope"]
    # the data plane exposes no control operations
    for path in ("/v1/routes/m", "/v1/rollouts", "/api/routes"):
        status, _, _ = await gw.post(path, {"canary_weight_bp": 10_000})
        assert status in (404, 405)
    async with gw.session.get(gw.url + PATHS["v1"]) as resp:
        assert resp.status == 405


async def test_build_app_serves_the_same_data_plane_as_an_application(
    tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    from aiohttp.test_utils import TestServer

    from coalmine.gateway.app import build_app
    from coalmine.gateway.server import seed_routes
    from coalmine.store.engine import open_engine

    config = make_config(tmp_path, {"v1": upstreams["v1"].url})
    seed_routes(config)
    engine = open_engine(config.store.url)
    async with (
        TestServer(build_app(config, engine), host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
        session.post(server.make_url(PATHS["plain"]), json=BODY) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["X-Model-Version"] == "v1"
    with engine.connect() as conn:  # the app's cleanup flushed the log
        assert conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 1
    engine.dispose()


async def test_expect_100_continue_is_answered(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    import asyncio

    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(BODY).encode()
    writer.write(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    await writer.drain()
    # the interim answer comes before the client sends its body
    assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(body)
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
