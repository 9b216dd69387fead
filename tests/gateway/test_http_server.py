"""The data plane's HTTP/1.1 handling, on both servers (`gateway.server`): pipelining,
malformed requests, slow and oversized bodies, clients that go away. Raw sockets against a
real gateway on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from coalmine.config import ConfigError, parse_config
from tests.gateway.conftest import BODY, StartGateway, Upstream, make_config

V1 = "/v1/models/m:predict"
BOUND_S = 10.0  # far above the configured timeouts: only a missing timeout reaches it
PAYLOAD = json.dumps(BODY).encode()


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def _post(request_id: str, body: bytes = PAYLOAD) -> bytes:
    head = (
        f"POST {V1} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response off the connection: status, headers (lower-case names), body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), BOUND_S)
    return status, headers, body


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), BOUND_S)


def test_an_unknown_server_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"v1": "http://127.0.0.1:9"})
    data: dict[str, Any] = config.model_dump(mode="json")
    data["gateway"]["server"] = "nginx"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    paths = dict(caught.value.errors)
    assert "gateway.server" in paths
    assert "protocol" in paths["gateway.server"] and "aiohttp" in paths["gateway.server"]


async def test_pipelined_requests_are_answered_in_order(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v1"].mode, upstreams["v1"].delay_s = "slow", 0.05
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    reader, writer = await _connect(gw.url)
    # three requests in one write: the first is the slowest to answer
    writer.write(
        _post("r-1") + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n" + _post("r-3", b'{"wrong": 1}')
    )
    first, second, third = [await _answer(reader) for _ in range(3)]
    assert (first[0], first[1]["x-request-id"]) == (200, "r-1")
    assert json.loads(first[2]) == {"predictions": ["label-v1"]}
    assert (second[0], json.loads(second[2])) == (200, {"status": "ok"})
    assert (third[0], third[1]["x-request-id"]) == (422, "r-3")
    # and the connection is kept alive for more
    writer.write(_post("r-4"))
    status, headers, _ = await _answer(reader)
    assert (status, headers["x-request-id"]) == (200, "r-4")
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/models/m:predict HTTP/9.9\r\nHost: gw\r\n\r\n",
        b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
        b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_a_400_and_the_gateway_serves_on(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, garbage: bytes
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    reader, writer = await _connect(gw.url)
    writer.write(garbage)
    answer = await _until_closed(reader)
    writer.close()
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    assert upstreams["v1"].seen == []
    status, _, _ = await gw.post(V1)
    assert status == 200


async def test_a_slowloris_body_is_a_408_and_the_connection_closes(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"body_timeout_s": 0.5})
    gw = await start_gateway(config)
    reader, writer = await _connect(gw.url)
    request = _post("slow")
    writer.write(request[: request.index(b"\r\n\r\n") + 4])

    async def trickle() -> None:  # a byte now and then: never idle, never done
        for byte in PAYLOAD[:-1]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(trickle())
    try:
        answer = await _until_closed(reader)
    finally:
        dripping.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body not received within 0.5s" in answer
    assert upstreams["v1"].seen == []
    status, _, _ = await gw.post(V1)
    assert status == 200


async def test_a_chunked_body_over_the_limit_is_a_413(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, server: str
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"max_body_bytes": 1000})
    gw = await start_gateway(config)
    reader, writer = await _connect(gw.url)
    writer.write(
        f"POST {V1} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"".join(b"1f4\r\n" + b"x" * 500 + b"\r\n" for _ in range(4))
        + b"0\r\n\r\n"
    )
    status, headers, body = await _answer(reader)
    assert status == 413
    assert json.loads(body) == {"error": "body over 1000 bytes"}
    if server == "protocol":  # it closes the connection (aiohttp reads on and keeps it)
        assert headers["connection"] == "close"
        assert await _until_closed(reader) == b""
    writer.close()
    # a chunked body within it is forwarded whole
    reader, writer = await _connect(gw.url)
    half = len(PAYLOAD) // 2
    writer.write(
        f"POST {V1} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n" % (half, PAYLOAD[:half])
        + b"%x\r\n%s\r\n" % (len(PAYLOAD) - half, PAYLOAD[half:])
        + b"0\r\n\r\n"
    )
    status, _, _ = await _answer(reader)
    writer.close()
    assert status == 200
    assert [s["body"] for s in upstreams["v1"].seen] == [PAYLOAD]


async def test_a_client_gone_mid_request_loses_nothing_else(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v1"].mode, upstreams["v1"].delay_s = "slow", 0.3
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    # one client leaves while its request is with the model, one halfway through its body
    _, gone = await _connect(gw.url)
    gone.write(_post("gone"))
    await gone.drain()
    _, half = await _connect(gw.url)
    half.write(_post("half")[:-5])
    await half.drain()
    await asyncio.sleep(0.1)
    gone.close()
    half.close()
    # others are served meanwhile, on the same gateway
    answers = await asyncio.gather(
        *(gw.post(V1, headers={"X-Request-ID": f"other-{i}"}) for i in range(3))
    )
    assert [status for status, _, _ in answers] == [200, 200, 200]
    await asyncio.sleep(0.4)  # the abandoned request's upstream call completes
    await gw.stop()
    logged = sorted(row.request_id for row in gw.rows())
    # the abandoned request was served to the end and logged; the half-sent one never began
    assert logged == ["gone", "other-0", "other-1", "other-2"]
    assert all(row.status == 200 for row in gw.rows())


async def test_expect_continue_over_the_limit_is_a_413_without_the_100(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"max_body_bytes": 1000})
    gw = await start_gateway(config)
    reader, writer = await _connect(gw.url)
    writer.write(
        f"POST {V1} HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
        "Content-Length: 5000\r\n\r\n".encode()
    )
    status, _, body = await _answer(reader)  # no interim 100 before it
    writer.close()
    assert status == 413
    assert json.loads(body) == {"error": "body over 1000 bytes"}


async def test_a_stop_lets_requests_in_flight_finish_and_closes_idle_connections(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v1"].mode, upstreams["v1"].delay_s = "slow", 0.5
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    idle_reader, idle_writer = await _connect(gw.url)
    busy_reader, busy_writer = await _connect(gw.url)
    busy_writer.write(_post("in-flight"))
    await busy_writer.drain()
    await asyncio.sleep(0.2)  # with the model now
    stopping = asyncio.create_task(gw.stop())
    assert await _until_closed(idle_reader) == b""  # idle: closed at once
    status, headers, _ = await _answer(busy_reader)
    assert (status, headers["x-request-id"]) == (200, "in-flight")
    await asyncio.wait_for(stopping, BOUND_S)
    for writer in (idle_writer, busy_writer):
        writer.close()
    assert [row.request_id for row in gw.rows()] == ["in-flight"]  # flushed by the stop


def _connection_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "_Connection._serve" in repr(t.get_coro())]


async def test_a_keep_alive_connection_has_one_task_which_ends_with_the_connection(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, server: str
) -> None:
    # the protocol server's task per connection waits between requests (one made per
    # request cost more); a client that goes away, idle or mid-request, leaves none behind
    if server == "aiohttp":
        pytest.skip("aiohttp's server has its own tasks")
    upstreams["v1"].mode, upstreams["v1"].delay_s = "slow", 0.3
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    reader, writer = await _connect(gw.url)
    for i in range(3):
        writer.write(_post(f"r-{i}"))
        status, headers, _ = await _answer(reader)
        assert (status, headers["x-request-id"]) == (200, f"r-{i}")
        assert len(_connection_tasks()) == 1  # the same task, waiting for the next request
    writer.close()
    _, gone_writer = await _connect(gw.url)
    gone_writer.write(_post("gone"))
    await gone_writer.drain()
    await asyncio.sleep(0.1)  # with the model now
    gone_writer.close()
    async with asyncio.timeout(BOUND_S):
        while _connection_tasks():
            await asyncio.sleep(0.02)
    status, _, _ = await gw.post(V1)  # and the gateway serves on
    assert status == 200


async def test_a_head_past_its_bound_is_refused_by_the_gateway(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, server: str
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    # one header past a line's bound: 431 here, 400 from aiohttp; the gateway's own answer
    status, headers, _ = await gw.post(V1, headers={"X-Big": "x" * 9000})
    assert status in (400, 431) and "X-Model-Version" not in headers
    if server == "protocol":  # aiohttp bounds lines, not the head as a whole
        # many small headers, sent in pieces, past the whole head's bound (64 KiB)
        reader, writer = await _connect(gw.url)
        writer.write(f"POST {V1} HTTP/1.1\r\nHost: gw\r\n".encode())
        for i in range(100):
            writer.write(f"X-Pad-{i}: {'y' * 1000}\r\n".encode())
            await writer.drain()
        answer = await _until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert upstreams["v1"].seen == []
    status, _, _ = await gw.post(V1)
    assert status == 200


async def test_http_1_0_closes_unless_kept_alive_and_head_answers_carry_no_body(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    reader, writer = await _connect(gw.url)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = await _until_closed(reader)  # HTTP/1.0: closed after the answer
    writer.close()
    assert answer.split(b"\r\n")[0].endswith(b"200 OK") and answer.endswith(b'{"status": "ok"}')
    reader, writer = await _connect(gw.url)
    writer.write(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await _answer(reader)
    assert status == 200 and headers["connection"].lower() == "keep-alive"
    # a HEAD answer has the head only: the next answer on the connection reads cleanly
    writer.write(b"HEAD /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    assert b" 405 " in head.split(b"\r\n")[0], head
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (await _answer(reader))[0] == 200
    writer.close()
