"""The request and answer the request path sees, apart from any server (pure)."""

from __future__ import annotations

import json

from multidict import CIMultiDict

from coalmine.gateway.wire import JSON, Answer, Request, encode_head, json_answer

NOW = 1_700_000_000.25  # Tue, 14 Nov 2023 22:13:20 GMT


def _request(*headers: tuple[str, str], version: tuple[int, int] = (1, 1)) -> Request:
    return Request("POST", "/v1/models/m:predict?x=1", CIMultiDict(headers), version)


def test_headers_are_case_insensitive_and_the_path_drops_its_query() -> None:
    request = _request(("x-request-id", "r1"), ("Content-Length", "12"))
    assert request.headers["X-Request-ID"] == "r1"
    assert request.content_length == 12
    assert request.path == "/v1/models/m:predict"
    assert request.raw_path == "/v1/models/m:predict?x=1"
    assert _request().content_length is None
    assert _request(("Content-Length", "12, 12")).content_length is None


def test_cookies_are_parsed_from_every_cookie_header() -> None:
    request = _request(("Cookie", "a=1; user=u-7"), ("cookie", "b=2"))
    assert request.cookies == {"a": "1", "user": "u-7", "b": "2"}
    assert _request().cookies == {}
    assert _request(("Cookie", 'bad="')).cookies.get("bad") is None


def test_expect_continue_only_for_http_1_1() -> None:
    assert _request(("Expect", "100-Continue")).expects_continue
    assert not _request(("Expect", "100-continue"), version=(1, 0)).expects_continue
    assert not _request(("Expect", "something-else")).expects_continue
    assert not _request().expects_continue


def test_a_head_carries_status_headers_length_and_date() -> None:
    answer = Answer(200, [("Content-Type", "application/json"), ("X-Model-Version", "v1")], b"{}")
    head = encode_head(answer, keep_alive=True, now=NOW)
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Model-Version: v1\r\n"
        b"Content-Length: 2\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        b"\r\n"
    )
    # the same second: the cached line; the next: a new one
    assert b"22:13:20" in encode_head(answer, keep_alive=True, now=NOW + 0.5)
    assert b"22:13:21" in encode_head(answer, keep_alive=True, now=NOW + 1)


def test_connection_header_says_what_the_version_does_not() -> None:
    answer = Answer(404)
    assert b"Connection: close\r\n" in encode_head(answer, keep_alive=False, now=NOW)
    assert b"Connection" not in encode_head(answer, keep_alive=True, now=NOW)
    kept = encode_head(answer, keep_alive=True, version=(1, 0), now=NOW)
    assert b"Connection: keep-alive\r\n" in kept
    assert kept.startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_any_status_gets_a_status_line() -> None:
    assert encode_head(Answer(599), keep_alive=True, now=NOW).startswith(
        b"HTTP/1.1 599 Unknown\r\n"
    )
    assert encode_head(Answer(413), keep_alive=True, now=NOW).startswith(
        b"HTTP/1.1 413 Request Entity Too Large\r\n"
    )


def test_a_header_decoded_as_utf8_is_echoed_as_it_came() -> None:
    raw = "r-é".encode()
    echoed = raw.decode("utf-8", "surrogateescape")
    head = encode_head(Answer(200, [("X-Request-ID", echoed)]), keep_alive=True, now=NOW)
    assert b"X-Request-ID: " + raw + b"\r\n" in head


def test_json_answer() -> None:
    answer = json_answer({"error": "x"}, 400, [("X-Request-ID", "r")])
    assert answer.status == 400
    assert answer.headers == [("Content-Type", JSON), ("X-Request-ID", "r")]
    assert json.loads(answer.body) == {"error": "x"}
    assert not answer.close


def test_a_request_from_raw_header_bytes_reads_them_case_insensitively() -> None:
    raw = [(b"x-request-id", b"r1"), (b"Content-Length", b"12"), (b"X-Request-Id", b"r2")]
    raw.append((b"X-Note", b"caf\xe9"))
    request = Request.from_raw("POST", "/v1/models/m:predict", raw)
    assert request.header("X-Request-ID") == "r1"  # the first one, as a multidict's get
    assert request.header("x-note") == "caf\udce9"  # decoded as aiohttp's server does
    assert request.header("Expect") is None
    assert request.content_length == 12
    assert request.raw_headers is raw
    assert request.headers.getall("X-Request-ID") == ["r1", "r2"]
    assert request.headers["X-Note"] == "caf\udce9"
