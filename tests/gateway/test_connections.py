"""Client connections: idle and half-sent ones are timed out, a cap holds, malformed requests
log one quiet line. Real sockets against a real gateway on loopback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from coalmine.gateway import connections
from coalmine.gateway.connections import connection_cap
from coalmine.log.throttle import ThrottledLog
from tests.gateway.conftest import StartGateway, Upstream, make_config

V1 = "/v1/models/m:predict"
BOUND_S = 10.0  # far above the configured timeouts: only a missing timeout reaches it


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), BOUND_S)


def _request(body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (
        f"POST {V1} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


async def test_idle_and_half_sent_connections_are_timed_out(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url},
        gateway={"keepalive_timeout_s": 0.8, "header_timeout_s": 0.3, "body_timeout_s": 0.3},
    )
    gw = await start_gateway(config)
    idle = await _connect(gw.url)
    half_head = await _connect(gw.url)
    half_head[1].write(f"POST {V1} HTTP/1.1\r\nHost: gw\r\nContent-".encode())
    half_body = await _connect(gw.url)
    half_body[1].write(_request(b'{"instances": [', declared=100))
    kept_alive = await _connect(gw.url)
    kept_alive[1].write(_request(b'{"instances": [1]}'))

    assert await _until_closed(idle[0]) == b""
    answer = await _until_closed(half_head[0])
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request head not received in time" in answer
    answer = await _until_closed(half_body[0])
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body not received within 0.3s" in answer
    # a served connection left idle afterwards is closed by the keep-alive timeout
    answer = await _until_closed(kept_alive[0])
    assert answer.startswith(b"HTTP/1.1 200"), answer
    for _, writer in (idle, half_head, half_body, kept_alive):
        writer.close()
    # and the gateway still serves
    status, _, _ = await gw.post(V1)
    assert status == 200


async def test_connections_past_the_cap_get_503_and_the_open_ones_keep_working(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"max_connections": 4})
    gw = await start_gateway(config)
    held = [await _connect(gw.url) for _ in range(4)]
    await asyncio.sleep(0.2)  # let the gateway accept them all
    reader, writer = await _connect(gw.url)
    answer = await _until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b"too many connections" in answer
    # the connections within the cap are served as usual
    reader, writer = held[0]
    writer.write(_request(b'{"instances": [1]}'))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    assert head.startswith(b"HTTP/1.1 200"), head
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)  # let the gateway see them closed
    status, _, _ = await gw.post(V1)
    assert status == 200


def test_the_cap_leaves_descriptors_for_the_rest_of_the_process() -> None:
    assert connection_cap(10_000, None) == 10_000
    assert connection_cap(10_000, 1024) == 384  # 256 in reserve, half of the rest
    assert connection_cap(10_000, 256) == 96
    assert connection_cap(50, 1024) == 50
    assert connection_cap(10_000, 40) == 4


async def test_a_malformed_request_logs_one_warning_line_not_a_traceback(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "_throttled", ThrottledLog(connections.log, 60.0))
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        reader, writer = await _connect(gw.url)
        writer.write(f"POST {V1} HTTP/1.1\r\nHost: gw\r\nthis is no header\r\n\r\n".encode())
        answer = await _until_closed(reader)
        writer.close()
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    status, _, _ = await gw.post(V1)
    assert status == 200

    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith("malformed HTTP request from ('127.0.0.1'"), lines
    assert "\n" not in lines[0] and "Invalid header token" in lines[0]
