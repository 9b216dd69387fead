"""Forwarding: three protocols, headers, bad input, the log rows of plain calls."""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.conftest import BODY, StartGateway, Upstream, make_config, read_request

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

    from coalmine.gateway.aiohttp_adapter import build_app
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


class _RawUpstream:
    """An upstream writing one fixed response byte for byte, to control every header."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        self.requests.append(head + body)
        writer.write(self.response)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> _RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("client", ["aiohttp", "httptools"])
async def test_end_to_end_response_headers_pass_back_and_hop_by_hop_ones_do_not(
    tmp_path: Path, start_gateway: StartGateway, client: str
) -> None:
    body = gzip.compress(json.dumps({"predictions": ["cat"]}).encode())
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close, X-Hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Hop: for-the-next-hop-only\r\n"
        b"Inference-Header-Content-Length: 27\r\n"
        b"Set-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n"
        b"Cache-Control: no-store\r\n"
        b"X-Request-ID: the-upstream-says\r\n"
        b"\r\n" % len(body)
    ) + body
    async with _RawUpstream(response) as upstream:
        config = make_config(tmp_path, {"v1": upstream.url}, gateway={"upstream_client": client})
        gw = await start_gateway(config)
        status, _, answer = await gw.post(PATHS["v1"], headers={"X-Request-ID": "req-7"})
        # aiohttp's dict(resp.headers) keeps one Set-Cookie; read the multidict instead
        async with gw.session.post(gw.url + PATHS["v1"], json=BODY) as resp:
            headers = resp.headers
            assert await resp.json() == {"predictions": ["cat"]}
    assert status == 200 and json.loads(answer) == {"predictions": ["cat"]}
    assert headers["Inference-Header-Content-Length"] == "27"
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "application/json"
    # hop-by-hop ones, those named in Connection, and the encoding of a body decoded here
    for name in ("X-Hop", "Keep-Alive", "Content-Encoding"):
        assert name not in headers, name
    assert headers["Content-Length"] == str(len(json.dumps({"predictions": ["cat"]})))
    assert headers.getall("X-Request-ID") != ["the-upstream-says"]  # the gateway's own
    assert len(headers.getall("X-Request-ID")) == 1


async def _raw_post(url: str, answer_length: int) -> tuple[list[bytes], bytes]:
    """POST BODY over a raw socket: the answer's head lines as they came, and its body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(BODY).encode()
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
        % (PATHS["v1"].encode(), len(payload))
        + payload
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    answer = await asyncio.wait_for(reader.readexactly(answer_length), 10)
    writer.close()
    return head.split(b"\r\n"), answer


async def test_an_upstream_header_is_passed_back_byte_for_byte(
    tmp_path: Path, start_gateway: StartGateway, server: str
) -> None:
    # obs-text (RFC 9110 5.5) and spacing as the upstream wrote them: the protocol server
    # passes the line on undecoded (it was latin-1 decoded and UTF-8 re-encoded: \xe9 became
    # \xc3\xa9); aiohttp's server writes str headers, so only the protocol server can
    if server == "aiohttp":
        pytest.skip("aiohttp's server encodes header values itself")
    body = json.dumps({"predictions": ["cat"]}).encode()
    note = b"X-Note:  caf\xe9 \xff"
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%s\r\nContent-Length: %d\r\n"
        b"Connection: keep-alive\r\n\r\n" % (note, len(body))
    ) + body
    async with _RawUpstream(response) as upstream:
        config = make_config(tmp_path, {"v1": upstream.url})
        gw = await start_gateway(config)
        lines, answer = await _raw_post(gw.url, len(body))
    assert note in lines
    assert answer == body
    assert b"Connection: keep-alive" not in lines  # still hop-by-hop: not passed back


async def test_an_answer_carries_one_date_header_the_gateways_own(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    # RFC 9110 6.6.1: one Date per message. The server writes its own; the upstream's was
    # passed back beside it on the protocol server (two Date lines); as nginx does, the
    # gateway's replaces it. The upstream's Server header is an end-to-end one: passed back.
    body = json.dumps({"predictions": ["cat"]}).encode()
    response = (
        b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nServer: model-x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    async with _RawUpstream(response) as upstream:
        config = make_config(tmp_path, {"v1": upstream.url})
        gw = await start_gateway(config)
        lines, _ = await _raw_post(gw.url, len(body))
    dates = [line for line in lines if line.lower().startswith(b"date:")]
    assert len(dates) == 1, dates
    assert b"2001" not in dates[0]
    assert b"Server: model-x" in lines


async def test_a_binary_request_is_forwarded_byte_for_byte(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                     "parameters": {"binary_data_size": 8}}]}
    ).encode()  # fmt: skip
    raw = struct.pack("<2f", 0.5, -1.25)
    body = header + raw
    answer = b'{"outputs":[{"name":"y","shape":[1],"datatype":"INT64","data":[3]}]}'
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    async with _RawUpstream(response % len(answer) + answer) as upstream:
        config = make_config(
            tmp_path, {"v1": upstream.url},
            routing={"sticky": {"json_field": "inputs.0.data.1"}},
        )  # fmt: skip
        gw = await start_gateway(config)
        status, _, _ = await gw.post(
            "/v2/models/m/infer",
            body,
            {"Inference-Header-Content-Length": str(len(header)),
             "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert status == 200
        (seen,) = upstream.requests
    head, _, sent = seen.partition(b"\r\n\r\n")
    assert sent == body
    assert b"\r\nInference-Header-Content-Length: %d\r\n" % len(header) in head
    await gw.stop()
    (row,) = gw.rows()
    assert json.loads(row.prediction) == [3]
    assert json.loads(row.input)["inputs"][0]["data"] == [0.5, -1.25]  # decoded for the log


def _status_response(status: int) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nX-From: upstream\r\n\r\n" % status


async def test_server_health_with_several_models_asks_every_stable_version(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    from coalmine.config import parse_config

    async with (
        _RawUpstream(_status_response(200)) as up,
        _RawUpstream(_status_response(503)) as down,
    ):
        models = [
            {"name": name, "versions": [{"name": "v1", "url": url}], "routing": {"stable": "v1"}}
            for name, url in (("a", up.url), ("b", down.url))
        ]
        config = parse_config(
            {"gateway": {"port": 0}, "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
             "models": models}
        )  # fmt: skip
        gw = await start_gateway(config)
        async with gw.session.get(gw.url + "/v2/health/ready") as resp:
            assert resp.status == 503
            assert await resp.json() == {"ready": False, "models": {"a": 200, "b": 503}}
        async with gw.session.get(gw.url + "/v2/models/a/ready") as resp:
            assert resp.status == 200 and resp.headers["X-From"] == "upstream"
        async with gw.session.get(gw.url + "/v2/models/b/versions/3/ready") as resp:
            assert resp.status == 503
        assert up.requests[-1].startswith(b"GET /v2/models/a/ready HTTP/1.1")
        assert down.requests[-1].startswith(b"GET /v2/models/b/versions/3/ready HTTP/1.1")
        async with gw.session.post(gw.url + "/v2/health/ready") as resp:
            assert resp.status == 405
