"""One contract suite for every upstream client, against real servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from coalmine.gateway.upstream.base import (
    RequestHeaders,
    UpstreamClient,
    UpstreamConnectionError,
    UpstreamResponse,
    UpstreamTimeout,
)
from coalmine.gateway.upstream.registry import CLIENTS, make_client, register_client
from tests.gateway.conftest import free_port, read_request, serve_app


@pytest.fixture(params=sorted(CLIENTS))
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    made = make_client(request.param)
    yield made
    await made.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    """An upstream with a few behaviours; yields its URL and the peer ports it saw."""
    peers: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(str(request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]
        body = await request.read()
        return web.Response(
            body=body,
            status=int(request.headers.get("X-Status", "200")),
            content_type="application/x-echo",
            headers={"X-Got-Header": request.headers.get("X-Custom", "")},
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async def compressed(request: web.Request) -> web.Response:
        # sent compressed although the client did not ask for it
        encoding = request.headers.get("X-Encoding", "gzip")
        data = b'{"predictions": [1, 2, 3]}'
        packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
        return web.Response(
            body=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
        )

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/slow", slow)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/compressed", compressed)

    async def header(request: web.Request) -> web.Response:
        # the bytes of X-Custom as the server received them
        return web.Response(body=request.headers["X-Custom"].encode("utf-8", "surrogateescape"))

    app.router.add_post("/header", header)

    async def headers(request: web.Request) -> web.Response:
        # every header the server received, in order, less those a client adds itself
        own = {"host", "content-length", "content-type", "user-agent", "accept",
               "accept-encoding", "connection"}  # fmt: skip
        got = [[k, v] for k, v in request.headers.items() if k.lower() not in own]
        return web.json_response(got)

    app.router.add_post("/headers", headers)
    runner, url = await serve_app(app, shutdown_timeout=0.1, keepalive_timeout=0.2)
    yield url, peers
    await runner.cleanup()


async def test_status_body_content_type_and_headers(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    response = await client.post(
        url + "/echo", b'{"x": 1}', [("X-Custom", "yes"), ("Content-Type", "application/json")], 5
    )
    assert (response.status, response.body) == (200, b'{"x": 1}')
    assert response.content_type.startswith("application/x-echo")
    for status in (404, 422, 500, 503):
        response = await client.post(url + "/echo", b"", [("X-Status", str(status))], 5)
        assert response.status == status


async def test_connections_are_kept_alive_and_stale_ones_replaced(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, peers = server
    for _ in range(5):
        assert (await client.post(url + "/echo", b"a", [], 5)).status == 200
    assert len(set(peers)) == 1  # one connection, reused
    await asyncio.sleep(0.6)  # the server closes idle connections after 0.2 s
    assert (await client.post(url + "/echo", b"b", [], 5)).body == b"b"
    assert len(set(peers)) == 2


async def test_concurrent_requests(client: UpstreamClient, server: tuple[str, list[str]]) -> None:
    url, _ = server
    bodies = [str(i).encode() * 10 for i in range(50)]
    responses = await asyncio.gather(*(client.post(url + "/echo", b, [], 5) for b in bodies))
    assert [r.body for r in responses] == bodies


async def test_large_and_chunked_bodies(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    big = b"x" * 300_000
    assert (await client.post(url + "/echo", big, [], 5)).body == big
    response = await client.post(url + "/chunked", b"", [], 5)
    assert response.body == b"one,two,three"


async def test_timeout(client: UpstreamClient, server: tuple[str, list[str]]) -> None:
    url, _ = server
    with pytest.raises(UpstreamTimeout):
        await client.post(url + "/slow", b"", [], 0.2)
    # the client is still usable afterwards
    assert (await client.post(url + "/echo", b"ok", [], 5)).body == b"ok"


async def test_connection_refused(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamConnectionError):
        await client.post(f"http://127.0.0.1:{free_port()}/echo", b"", [], 2)


def test_registry_rejects_unknown_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unknown upstream client 'curl'"):
        make_client("curl")
    with pytest.raises(ValueError, match="already registered"):
        register_client("aiohttp", CLIENTS["aiohttp"])


async def test_compressed_body_is_decoded(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    for encoding in ("gzip", "deflate"):
        response = await client.post(url + "/compressed", b"", [("X-Encoding", encoding)], 5)
        assert (response.status, response.body) == (200, b'{"predictions": [1, 2, 3]}')


async def test_interim_1xx_responses_are_skipped(client: UpstreamClient) -> None:
    """A server that sends 100 Continue and 103 Early Hints before its answer."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n"
            b"done"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        response = await client.post(f"http://127.0.0.1:{port}/x", b"{}", [], 5)
        assert (response.status, response.body, response.content_type) == (
            201,
            b"done",
            "text/plain",
        )
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as a test CA would make one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    app = web.Application()
    app.router.add_post("/echo", echo)
    runner, url = await serve_app(app, ssl_context=context, shutdown_timeout=0.1)
    yield url
    await runner.cleanup()


@pytest.mark.parametrize("name", sorted(CLIENTS))
async def test_https_upstream_verified_against_the_given_ca(
    name: str, certificate: tuple[Path, Path], tls_server: str
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    client = CLIENTS[name](ssl_context=trusting)  # type: ignore[call-arg]
    try:
        for body in (b'{"a": 1}', b'{"b": 2}'):  # the second call reuses the TLS connection
            response = await client.post(tls_server + "/echo", body, [], 5)
            assert (response.status, response.body) == (200, body)
    finally:
        await client.close()
    # by default the system's CAs decide, and they do not know this certificate
    strict = make_client(name)
    try:
        with pytest.raises(UpstreamConnectionError):
            await strict.post(tls_server + "/echo", b"{}", [], 5)
    finally:
        await strict.close()


async def test_non_ascii_header_values_are_forwarded_as_sent(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    response = await client.post(url + "/header", b"x", [("X-Custom", "café")], 5)
    assert (response.status, response.body) == (200, "café".encode())


async def test_pre_encoded_headers_and_their_mirror_variant_are_sent_as_given(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    # the gateway hands the client one RequestHeaders per request, and its copies a variant
    url, _ = server
    mark = RequestHeaders([("X-Shadow", "1")])
    production = RequestHeaders([("X-Custom", "café"), ("Authorization", "Bearer s3cret")])
    copy = production.without(frozenset({"authorization"}), mark)
    same = RequestHeaders([("X-Custom", "a"), ("X-Other", "b")]).without(
        frozenset({"authorization"}), mark
    )
    for headers, expected in (
        (production, [["X-Custom", "café"], ["Authorization", "Bearer s3cret"]]),
        (copy, [["X-Custom", "café"], ["X-Shadow", "1"]]),
        (same, [["X-Custom", "a"], ["X-Other", "b"], ["X-Shadow", "1"]]),
    ):
        for _ in range(2):  # encoded once, sent twice: the production call and a retry
            response = await client.post(url + "/headers", b"{}", headers, 5)
            assert json.loads(response.body) == expected


class Outcomes:
    """What `post_soon` calls back with, by context."""

    def __init__(self, expected: int) -> None:
        self.got: dict[object, tuple[UpstreamResponse | None, BaseException | None]] = {}
        self.expected = expected
        self.all_in = asyncio.Event()

    def answered(
        self, context: object, response: UpstreamResponse | None, error: BaseException | None
    ) -> None:
        assert context not in self.got  # once per call
        self.got[context] = (response, error)
        if len(self.got) >= self.expected:
            self.all_in.set()


async def test_post_soon_calls_back_once_with_the_answer_or_the_error(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    outcomes = Outcomes(22)
    for i in range(20):
        client.post_soon(url + "/echo", b"%d" % i, [("X-Custom", "c")], 5, outcomes.answered, i)
    refused = f"http://127.0.0.1:{free_port()}/echo"
    client.post_soon(refused, b"", [], 5, outcomes.answered, "refused")
    client.post_soon("ftp://127.0.0.1/x", b"", [], 5, outcomes.answered, "not http")
    assert not outcomes.got  # never from within the call: the caller goes on first
    async with asyncio.timeout(10):
        await outcomes.all_in.wait()
    for i in range(20):
        response, error = outcomes.got[i]
        assert error is None and response is not None
        assert (response.status, response.body) == (200, b"%d" % i)
    for context in ("refused", "not http"):
        response, error = outcomes.got[context]
        assert response is None and isinstance(error, UpstreamConnectionError)
    # the connections went back to the pool: a second round reuses them
    again = Outcomes(1)
    client.post_soon(url + "/echo", b"x", [], 5, again.answered, "again")
    async with asyncio.timeout(10):
        await again.all_in.wait()
    assert again.got["again"][0].body == b"x"  # type: ignore[union-attr]


async def test_post_soon_timeout(client: UpstreamClient, server: tuple[str, list[str]]) -> None:
    url, _ = server
    outcomes = Outcomes(1)
    client.post_soon(url + "/slow", b"", [], 0.2, outcomes.answered, "slow")
    async with asyncio.timeout(5):
        await outcomes.all_in.wait()
    assert isinstance(outcomes.got["slow"][1], UpstreamTimeout)


async def test_close_stops_post_soon_calls_in_flight(
    client: UpstreamClient, server: tuple[str, list[str]]
) -> None:
    url, _ = server
    outcomes = Outcomes(1)
    client.post_soon(url + "/slow", b"", [], 5, outcomes.answered, "slow")
    await asyncio.sleep(0.2)  # sent, and waiting for its answer (2 s)
    await client.close()
    await asyncio.sleep(0.3)
    # stopped: no answer arrives; at most the error of the closed connection
    response, error = outcomes.got.get("slow", (None, None))
    assert response is None
    assert error is None or isinstance(error, UpstreamConnectionError)


@pytest.fixture
async def closes_second_request() -> AsyncIterator[tuple[str, list[int]]]:
    """An upstream whose first connection answers one request, keeps alive, then closes
    without a word when the next request arrives (as an idle timeout racing a request
    does); later connections answer every request. Yields its URL and each request's
    connection number."""
    served: list[int] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            answered = 0
            while True:
                await read_request(reader)
                if number == 1 and answered == 1:
                    return  # closed, unanswered
                served.append(number)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", served
    server.close()


@pytest.fixture
async def httptools_client() -> AsyncIterator[UpstreamClient]:
    # aiohttp's client does not retry a POST whose pooled connection was closed under it
    made = make_client("httptools")
    yield made
    await made.close()


async def test_stale_pooled_connection_is_retried_on_a_new_one(
    httptools_client: UpstreamClient, closes_second_request: tuple[str, list[int]]
) -> None:
    client = httptools_client
    url, served = closes_second_request
    assert (await client.post(url + "/p", b"1", [], 5)).body == b"ok"
    # the pooled connection is closed by the upstream as this request arrives: it never
    # saw the request, so it is sent again on a new connection
    assert (await client.post(url + "/p", b"2", [], 5)).body == b"ok"
    assert served == [1, 2]


async def test_stale_pooled_connection_is_retried_for_post_soon(
    httptools_client: UpstreamClient, closes_second_request: tuple[str, list[int]]
) -> None:
    client = httptools_client
    url, served = closes_second_request
    assert (await client.post(url + "/p", b"1", [], 5)).body == b"ok"
    outcomes = Outcomes(1)
    client.post_soon(url + "/p", b"2", [], 5, outcomes.answered, "copy")
    async with asyncio.timeout(5):
        await outcomes.all_in.wait()
    response, error = outcomes.got["copy"]
    assert error is None and response is not None and response.body == b"ok"
    assert served == [1, 2]


async def _scripted(pieces: list[bytes], close: bool = False) -> asyncio.Server:
    """An upstream that answers every request with `pieces`, written apart (so they
    arrive in separate reads), then closes the connection when `close`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.02)
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_headers_as_received_across_reads_and_after_an_interim_answer(
    client: UpstreamClient,
) -> None:
    server = await _scripted(
        [
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Multi: one\r\n",
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Multi:  two \r\nConte",
            b'nt-Length: 13\r\nInference-Header-Content-Length: 7\r\n\r\n{"a": ',
            b"[1, 2]}",
        ]
    )
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        for _ in range(2):  # the second on the kept-alive connection
            response = await client.post(url + "/p", b"{}", [], 5)
            assert (response.status, response.body) == (200, b'{"a": [1, 2]}')
            got = [(k, v) for k, v in response.headers if k.lower() not in {"date", "server"}]
            assert got == [
                ("Content-Type", "application/json"),
                ("X-Multi", "one"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("X-Multi", "two"),
                ("Content-Length", "13"),
                ("Inference-Header-Content-Length", "7"),
            ]
            assert response.header("x-multi") == "one"
            assert response.header("inference-header-content-length") == "7"
            assert response.header("Link") is None  # the interim answer's
            assert response.content_type == "application/json"
    finally:
        server.close()


async def test_answer_delimited_by_the_close_of_the_connection(client: UpstreamClient) -> None:
    server = await _scripted(
        [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", b"\r\npart one,", b" part two"],
        close=True,
    )
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        response = await client.post(url + "/p", b"{}", [], 5)
        assert (response.status, response.body) == (200, b"part one, part two")
        assert response.header("Content-Length") is None
        assert response.headers[0] == ("Content-Type", "text/plain")
    finally:
        server.close()


@pytest.fixture
async def answers_together() -> AsyncIterator[str]:
    """An upstream that answers at once, except `/prod` and `/copy`: those wait for each
    other, then both answers are written in one go, production's first (as a mirror copy's
    answer often comes in the same poll as production's). Yields its URL."""
    held: dict[bytes, asyncio.StreamWriter] = {}
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, _ = await read_request(reader)
                path = head.split(b" ", 2)[1]
                if path not in (b"/prod", b"/copy"):
                    writer.write(ok)
                    continue
                held[path] = writer
                if len(held) == 2:
                    held.pop(b"/prod").write(ok)
                    held.pop(b"/copy").write(ok)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def test_a_copys_answer_is_handled_after_the_production_answer_beside_it(
    httptools_client: UpstreamClient, answers_together: str
) -> None:
    """At one connection the client's answer is on the critical path: a mirror copy's
    answer read in the same poll must not be handled (its record, the next copy) before
    production's request resumes and writes it."""
    client, url = httptools_client, answers_together
    # two pooled keep-alive connections, so that the copy takes post_soon's usual path
    await asyncio.gather(*(client.post(url + "/warm", b"", [], 5) for _ in range(2)))
    resumed: list[bool] = []
    seen: list[bool] = []
    done = asyncio.Event()

    def answered(context: object, response: object, error: object) -> None:
        seen.append(bool(resumed))
        done.set()

    client.post_soon(url + "/copy", b"c", [], 5, answered, "copy")
    response = await client.post(url + "/prod", b"p", [], 5)
    resumed.append(True)
    async with asyncio.timeout(5):
        await done.wait()
    assert response.body == b"ok"
    assert seen == [True]  # production's request had resumed when the copy's was handled
