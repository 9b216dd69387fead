"""A request's end-to-end headers are filtered and encoded once for all its upstream calls."""

from __future__ import annotations

from coalmine.gateway.mirror import mirror_headers
from coalmine.gateway.upstream.base import RequestHeaders, encode_headers

STRIP = frozenset({"authorization", "cookie", "x-api-key"})


def test_encoded_block_is_the_header_lines_as_the_client_sent_them() -> None:
    # aiohttp's server hands undecodable bytes over as surrogates: sent back as they came
    raw = "caf\udcc3\udca9"
    headers = RequestHeaders([("X-Custom", "café"), ("X-Raw", raw)])
    assert headers.encoded() == b"X-Custom: caf\xc3\xa9\r\nX-Raw: caf\xc3\xa9\r\n"
    assert headers.encoded() is headers.encoded()  # encoded once
    assert list(headers) == [("X-Custom", "café"), ("X-Raw", raw)]


def test_mirror_variant_drops_credentials_marks_the_copy_and_is_made_once() -> None:
    production = RequestHeaders(
        [("X-User-Id", "u1"), ("authorization", "Bearer s3cret"), ("Cookie", "a=b")]
    )
    copy = mirror_headers(production, STRIP)
    assert list(copy) == [("X-User-Id", "u1"), ("X-Shadow", "1")]
    assert copy.encoded() == b"X-User-Id: u1\r\nX-Shadow: 1\r\n"
    # the shadow's, the baseline's and the paired copy of one request share it
    assert mirror_headers(production, STRIP) is copy
    # the production headers themselves are untouched
    assert list(production)[1:] == [("authorization", "Bearer s3cret"), ("Cookie", "a=b")]


def test_variant_dropping_nothing_reuses_the_production_block() -> None:
    production = RequestHeaders([("X-User-Id", "u1"), ("Content-Type", "application/json")])
    block = production.encoded()
    copy = mirror_headers(production, STRIP)
    assert copy.encoded() == block + b"X-Shadow: 1\r\n"
    assert copy.encoded() == encode_headers(list(copy))
    assert copy.encoded().startswith(block)


def test_plain_pairs_are_accepted_too() -> None:
    # the Router and tests pass lists; they get the same copy headers
    copy = mirror_headers([("Authorization", "x"), ("X-A", "1")], STRIP)
    assert list(copy) == [("X-A", "1"), ("X-Shadow", "1")]
