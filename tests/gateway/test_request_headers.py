"""A request's end-to-end headers are filtered and encoded once for all its upstream calls."""

from __future__ import annotations

import gc

import pytest

from coalmine.gateway.mirror import mirror_headers
from coalmine.gateway.upstream.base import (
    HOP_BY_HOP_BYTES,
    RequestHeaders,
    encode_headers,
    end_to_end_lines,
    end_to_end_raw,
)

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


def test_end_to_end_lines_keep_the_lines_as_received_less_hop_by_hop_and_named_ones() -> None:
    dropped = frozenset({b"connection", b"content-length", b"keep-alive"})
    head = (
        b"Content-Type: application/json\r\ncontent-length: 3\r\nCONNECTION: close, X-Hop\r\n"
        b"X-Hop: 1\r\nSet-Cookie: a=1\r\nx-hop: 2\r\nSet-Cookie:  b=2 "
    )
    assert end_to_end_lines(head, dropped) == (
        b"Content-Type: application/json\r\nSet-Cookie: a=1\r\nSet-Cookie:  b=2 \r\n"
    )
    assert end_to_end_lines(b"Connection: keep-alive", dropped) == b""
    assert end_to_end_lines(b"", dropped) == b""


def test_raw_headers_are_sent_as_received_and_their_mirror_variant_filtered_as_bytes() -> None:
    # the protocol server's header bytes: never decoded on the way to the upstreams
    production = RequestHeaders.from_raw(
        [(b"X-User-Id", b"caf\xe9"), (b"AUTHORIZATION", b"Bearer s3cret"), (b"X-A", b"1")]
    )
    assert production.encoded() == (
        b"X-User-Id: caf\xe9\r\nAUTHORIZATION: Bearer s3cret\r\nX-A: 1\r\n"
    )
    copy = mirror_headers(production, STRIP)
    assert copy.encoded() == b"X-User-Id: caf\xe9\r\nX-A: 1\r\nX-Shadow: 1\r\n"
    assert mirror_headers(production, STRIP) is copy
    # a client that takes pairs gets them decoded as aiohttp's server decodes them
    assert list(copy) == [("X-User-Id", "caf\udce9"), ("X-A", "1"), ("X-Shadow", "1")]
    assert encode_headers(list(copy)) == copy.encoded()
    kept = RequestHeaders.from_raw([(b"X-A", b"1")])
    assert mirror_headers(kept, STRIP).encoded() == kept.encoded() + b"X-Shadow: 1\r\n"


def test_raw_end_to_end_drops_hop_by_hop_and_connection_named_headers() -> None:
    raw = [
        (b"Host", b"gw"), (b"connection", b"keep-alive, X-Hop"), (b"x-hop", b"1"),
        (b"Content-Length", b"3"), (b"X-User-Id", b"u1"), (b"TE", b"trailers"),
    ]  # fmt: skip
    assert end_to_end_raw(raw, HOP_BY_HOP_BYTES) == [(b"X-User-Id", b"u1")]


@pytest.mark.parametrize("made_from", ["pairs", "raw"])
def test_a_sent_copy_leaves_no_cycle_for_the_collector(made_from: str) -> None:
    # the production headers keep their copies' variant, which is encoded from theirs: once
    # the copy's block is made (it is sent), dropping both frees them by reference counting
    pairs = [("X-User-Id", "u1"), ("Authorization", "Bearer s3cret")]
    gc.collect()
    gc.disable()
    try:
        production = (
            RequestHeaders(list(pairs))
            if made_from == "pairs"
            else RequestHeaders.from_raw([(k.encode(), v.encode()) for k, v in pairs])
        )
        copy = mirror_headers(production, frozenset({"x-other"}))  # drops none: a suffix
        assert copy.encoded() == b"X-User-Id: u1\r\nAuthorization: Bearer s3cret\r\nX-Shadow: 1\r\n"
        production.encoded()
        del production, copy
        assert gc.collect() == 0
    finally:
        gc.enable()
