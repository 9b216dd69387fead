"""Property tests (hypothesis) of what the gateway reads from a request and a model's answer:
whatever the bytes, parsing ends in a value or one of the documented refusals, never another
exception (which the request path would turn into a 500), and redaction never lets a
redacted field's value through."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coalmine.config import LoggingConfig
from coalmine.gateway.protocols import PLAIN, V1, V2, match_inference_path, parse_response
from coalmine.log.policy import InputPolicy, JsonTooDeep, json_path, loads_bounded

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=25,
)  # fmt: skip
bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
deep = st.integers(min_value=90, max_value=3000).map(lambda n: b"[" * n + b"]" * n)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=bodies | deep)
def test_loads_bounded_returns_a_value_or_a_documented_refusal(data: bytes) -> None:
    with contextlib.suppress(ValueError, UnicodeDecodeError, JsonTooDeep):
        loads_bounded(data)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(value=json_values, path=st.text(max_size=30))
def test_a_json_path_never_raises(value: Any, path: str) -> None:
    json_path(value, path)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    body=bodies | deep,
    mode=st.sampled_from(["full", "redacted", "hashed", "none"]),
    max_bytes=st.integers(min_value=1, max_value=200),  # 0 means no cap
)
def test_input_shaping_is_bounded_and_never_fails_otherwise(
    body: bytes, mode: str, max_bytes: int
) -> None:
    policy = InputPolicy(LoggingConfig(inputs=mode, redact_fields=["email"],
                                       max_input_bytes=max_bytes))  # fmt: skip
    try:
        shaped = policy.shape_input(body)
    except JsonTooDeep:
        return
    if mode == "none":
        assert shaped is None
    elif mode in ("full", "redacted"):
        # a cut text ends with the marker; a redacted body that is not JSON is its digest
        assert shaped is not None and len(shaped.encode()) <= max(max_bytes + 16, 64)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=json_values, secret=st.text(min_size=12, max_size=20, alphabet="QXZJKV"))
def test_a_redacted_field_never_reaches_the_log(value: Any, secret: str) -> None:
    assume(secret not in json.dumps(value))
    body = json.dumps({"instances": [{"email": secret, "x": value}]}).encode()
    shaped = InputPolicy(LoggingConfig(inputs="redacted", redact_fields=["email"])).shape_input(
        body
    )
    assert shaped is not None and secret not in shaped


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    body=bodies,
    status=st.sampled_from([200, 201, 400, 500]),
    header=st.none() | st.text(max_size=6),
    protocol=st.sampled_from([V1, V2, PLAIN]),
)
def test_a_model_answer_is_parsed_or_left_unparsed_never_raises(
    body: bytes, status: int, header: str | None, protocol: Any
) -> None:
    prediction, scores = parse_response(protocol, body, status, header)
    if status >= 300:
        assert (prediction, scores) == (None, None)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(path=st.text(max_size=60))
def test_only_inference_paths_match_and_name_one_model(path: str) -> None:
    matched = match_inference_path(path)
    if matched is not None:
        _, model = matched
        assert model and "/" not in model
