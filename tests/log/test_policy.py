"""Input logging policy and slice extraction (pure functions, literal inputs)."""

from __future__ import annotations

import hashlib
import json

import pytest

from coalmine.config import LoggingConfig, SliceField
from coalmine.log.policy import (
    REDACTED,
    TRUNCATION_MARKER,
    InputPolicy,
    canonical_json,
    extract_slices,
    json_path,
    shape_input,
)

BODY = {"instances": [{"email": "a@b.c", "x": [1, 2]}], "Email": "top", "meta": {"ssn": "1"}}


def policy(**kwargs: object) -> InputPolicy:
    return InputPolicy(LoggingConfig.model_validate(kwargs))


def test_full_keeps_the_json_body_and_raw_bytes() -> None:
    assert json.loads(policy(inputs="full").shape_input(BODY) or "") == BODY
    assert policy(inputs="full").shape_input(b"not json \xff") == "not json \ufffd"


def test_redacted_replaces_named_fields_at_any_depth_case_insensitively() -> None:
    p = policy(inputs="redacted", redact_fields=["email", "ssn"])
    for body in (BODY, json.dumps(BODY).encode()):
        shaped = json.loads(p.shape_input(body) or "")
        assert shaped == {
            "instances": [{"email": REDACTED, "x": [1, 2]}],
            "Email": REDACTED,
            "meta": {"ssn": REDACTED},
        }
    assert BODY["meta"] == {"ssn": "1"}  # the caller's object is not modified


def test_redacted_fails_closed_on_a_body_that_is_not_json() -> None:
    raw = b"email=a@b.c"
    assert policy(inputs="redacted", redact_fields=["email"]).shape_input(raw) == (
        hashlib.sha256(raw).hexdigest()
    )


def test_hashed_is_the_digest_of_the_canonical_body() -> None:
    p = policy(inputs="hashed")
    expected = hashlib.sha256(canonical_json(BODY).encode()).hexdigest()
    reordered = json.dumps(dict(reversed(list(BODY.items())))).encode()
    assert p.shape_input(BODY) == expected
    assert p.shape_input(reordered) == expected  # key order and spacing do not matter
    assert p.shape_input(b"\x00raw") == hashlib.sha256(b"\x00raw").hexdigest()


def test_none_logs_nothing() -> None:
    assert policy(inputs="none").shape_input(BODY) is None
    assert shape_input(b"{}", LoggingConfig(inputs="none")) is None


@pytest.mark.parametrize("body", [{"text": "é" * 100}, ("é" * 100).encode()])
def test_long_input_is_cut_to_the_cap_with_a_marker(body: object) -> None:
    shaped = policy(inputs="full", max_input_bytes=51).shape_input(body) or ""
    assert shaped.endswith(TRUNCATION_MARKER)
    assert len(shaped.removesuffix(TRUNCATION_MARKER).encode()) <= 51  # no split character
    assert policy(inputs="full", max_input_bytes=0).shape_input(body) is not None
    assert TRUNCATION_MARKER not in (policy(max_input_bytes=0).shape_input(body) or "")


def test_json_path_reads_keys_and_list_indices() -> None:
    assert json_path(BODY, "instances.0.email") == "a@b.c"
    assert json_path(BODY, "instances.0.x.1") == 2
    assert json_path(BODY, "instances.1.email") is None
    assert json_path(BODY, "instances.first") is None
    assert json_path(BODY, "meta.ssn.deeper") is None
    assert json_path(None, "a") is None
    assert json_path({"0": "key"}, "0") == "key"


def test_extract_slices_from_headers_and_json() -> None:
    fields = [
        SliceField(name="country", header="X-Country"),
        SliceField(name="device", json_field="instances.0.device"),
        SliceField(name="x", json_field="instances.0.x"),
        SliceField(name="missing", header="X-None"),
    ]
    body = {"instances": [{"device": "ios", "x": [1, 2]}]}
    assert extract_slices(fields, {"x-country": "NL"}, body) == {
        "country": "NL",
        "device": "ios",
        "x": "[1,2]",
        "missing": None,
    }
    assert extract_slices(fields[1:2], {}, None) == {"device": None}


# bodies the writer shapes from bytes: each must give what the parsed body gives
ODD_BODIES = [
    b'{"Email": {"deep": [1, {"email": 2}]}, "x": [{"EMAIL": "a", "y": {"ssn": 3}}]}',
    b'{"email": 1, "email": 2, "a": {"b": 1, "b": {"ssn": 4}}}',  # duplicate keys: last wins
    b'[{"email": "x"}, "email", 1.5e-07, 1e16, 123456789012345678901234567890, -0.0, true]',
    b'{"v": NaN, "w": -Infinity, "t": "tab\\t \\u00e9 \\ud83d\\ude00 \\u2028 \\u0000"}',
    '{"caf\\u00e9": "é", "émail": "日本", "e\\u006dail": "escaped key"}'.encode(),
    "\ufeff".encode() + b'{"email": "after a BOM"}',
    '{"email": "utf-16"}'.encode("utf-16"),
    '{"ssn": "utf-32-le"}'.encode("utf-32-le"),
    b'  "just a string"  ',
    b"42",
    b"null",
    b'{"email": ' + b"[" * 60 + b"]" * 60 + b', "x": ' + b'{"ssn":' * 30 + b"1" + b"}" * 30 + b"}",
    b'{"x": ' + b"[" * 90 + b"]" * 90 + b', "email": [' + b"[]," * 20 + b"[]]}",  # >100: slow path
]
NOT_JSON = [b"email=a@b.c", b'{"email": "a"', b'{"email": "\xff"}', b"", b"{'email': 1}"]


@pytest.mark.parametrize("max_bytes", [4096, 40, 0])
def test_redacted_bytes_give_what_the_parsed_body_gives(max_bytes: int) -> None:
    p = policy(inputs="redacted", redact_fields=["email", "SSN"], max_input_bytes=max_bytes)
    for raw in ODD_BODIES:
        assert p.shape_input(raw) == p.shape_input(json.loads(raw)), raw
        assert p.shape_input(bytearray(raw)) == p.shape_input(raw)
    for raw in NOT_JSON:  # fails closed: the digest, never the text
        assert p.shape_input(raw) == hashlib.sha256(raw).hexdigest(), raw
    shaped = p.shape_input(ODD_BODIES[0])
    if max_bytes == 0:
        assert json.loads(shaped or "") == {
            "Email": REDACTED, "x": [{"EMAIL": REDACTED, "y": {"ssn": REDACTED}}]
        }  # fmt: skip


@pytest.mark.parametrize("inputs", ["redacted", "hashed", "full"])
@pytest.mark.parametrize("size", [1, 2_000])  # within the cap, and cut by it
def test_a_lone_surrogate_escape_gives_utf8_text_of_the_same_value(inputs: str, size: int) -> None:
    """JSON may escape half a surrogate pair ("\\ud800"); it reads as a lone surrogate that
    UTF-8 cannot hold. The logged text escapes it (and the rest) instead of failing to be
    cut, hashed or stored."""
    raw = b'{"t": "' + b"\\ud800 \xc3\xa9 " * size + b'", "user_id": "\\udfff"}'
    p = policy(inputs=inputs, redact_fields=["user_id"], max_input_bytes=4096)
    for body in (raw, json.loads(raw)):
        shaped = p.shape_input(body) or ""
        shaped.encode()  # valid UTF-8: no lone surrogate left
        if inputs == "hashed":
            assert shaped == hashlib.sha256(canonical_json(json.loads(raw)).encode()).hexdigest()
        elif inputs == "redacted" and size == 1:
            assert json.loads(shaped) == {"t": "\ud800 é ", "user_id": REDACTED}
        elif inputs == "redacted":
            assert shaped.endswith(TRUNCATION_MARKER)
    # text without a lone surrogate keeps its characters unescaped
    assert canonical_json({"t": "é"}) == '{"t":"é"}'
