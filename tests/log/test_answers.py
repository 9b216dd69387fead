"""Raw records (a gateway call, its answer undecoded) and how the log's writer finishes them:
the deferral of input shaping is taken only where it gives the same text, and both kinds of
record travel through the writer process to the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coalmine.config import LoggingConfig
from coalmine.log.answers import MAX_SHIPPED_ANSWER_BYTES, finish, finish_all, raw_record
from coalmine.log.policy import MAX_DEFERRED_INPUT_BYTES, MAX_JSON_DEPTH, InputPolicy, JsonTooDeep
from coalmine.log.process_writer import ProcessWriter
from coalmine.log.record import RawRecord
from coalmine.store.engine import open_engine
from coalmine.store.predictions import read_since
from tests.log.test_writer import config, record

ANSWER = b'{"predictions": ["b"], "probabilities": [[0.25, 0.75]], "classes": ["a", "b"]}'


def policy(inputs: str) -> InputPolicy:
    return InputPolicy(LoggingConfig(inputs=inputs, redact_fields=["user_id"]))  # type: ignore[arg-type]


def raw(i: int, answer: bytes | None = ANSWER, status: int = 200, **kw: object) -> RawRecord:
    values: dict[str, object] = {
        "request_id": f"r{i}", "model": "iris", "version": "v1", "role": "canary", "ts": 1.0,
        "latency_ms": 2.0, "status": status, "error_class": None, "protocol": "v1",
        "answer": answer, "header_length": None, "scores_field": None, "input": "in",
        "slices": {"device": "ios"}, "canary_weight_bp": 100, "rollout_id": 1,
    }  # fmt: skip
    return raw_record(**{**values, **kw})  # type: ignore[arg-type]


BODIES = [
    b'{"user_id": "u", "x": [1, 2]}',
    b"not json",
    b"[" * 60 + b"]" * 60,  # 120 brackets: shaped now
    json.dumps({"user_id": "u", "pad": "x" * 5000}).encode(),  # over max_input_bytes
    b"",
]


@pytest.mark.parametrize("inputs", ["full", "redacted", "hashed", "none"])
@pytest.mark.parametrize("body", BODIES, ids=["json", "text", "brackets", "large", "empty"])
def test_an_input_is_deferred_only_when_the_writer_would_shape_it_the_same(
    inputs: str, body: bytes
) -> None:
    p = policy(inputs)
    later = p.shape_later(body)
    deferred = isinstance(later, bytes)
    assert deferred == (
        inputs in ("redacted", "hashed")
        and len(body) <= min(MAX_DEFERRED_INPUT_BYTES, p.max_bytes)
        and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    )
    assert (p.shape_input(later) if deferred else later) == p.shape_input(body)


def test_bodies_are_deferred_up_to_max_input_bytes_or_64_kib_without_a_cap() -> None:
    big = json.dumps({"user_id": "u", "pad": "x" * (MAX_DEFERRED_INPUT_BYTES - 40)}).encode()
    capped = InputPolicy(LoggingConfig(inputs="hashed", max_input_bytes=len(big) - 1))
    assert isinstance(capped.shape_later(big), str)
    uncapped = InputPolicy(LoggingConfig(inputs="hashed", max_input_bytes=0))
    assert uncapped.shape_later(big) == big
    assert isinstance(uncapped.shape_later(big + b" " * 64), str)  # past 64 KiB


def test_a_body_too_deep_to_redact_is_still_refused_on_the_request_path() -> None:
    with pytest.raises(JsonTooDeep):
        policy("redacted").shape_later(b"[" * 200 + b"]" * 200)


def test_finish_reads_the_answer_and_shapes_the_deferred_input() -> None:
    body = b'{"user_id": "u-1", "x": 1}'
    row = finish(raw(1, input=body), policy("redacted"))
    assert (row.prediction, row.scores) == (["b"], [{"a": 0.25, "b": 0.75}])
    assert row.input == '{"user_id":"[redacted]","x":1}'
    assert (row.request_id, row.role, row.rollout_id) == ("r1", "canary", 1)
    assert row.slices == {"device": "ios"}
    # no response, an error status, an unreadable answer: no prediction, as before
    for answer, status in ((None, 0), (ANSWER, 503), (b"\xff", 200)):
        row = finish(raw(2, answer, status), policy("redacted"))
        assert (row.prediction, row.scores, row.status) == (None, None, status)


def test_an_answer_too_large_to_ship_is_read_before_it_is_queued() -> None:
    big = json.dumps({"predictions": list(range(MAX_SHIPPED_ANSWER_BYTES // 4))}).encode()
    record_ = raw(1, big)
    assert record_.answer is None and record_.prediction == list(
        range(MAX_SHIPPED_ANSWER_BYTES // 4)
    )
    assert finish(record_, policy("none")).prediction == record_.prediction
    assert raw(2).answer == ANSWER  # a small one goes as it came


async def test_raw_and_decoded_records_both_reach_the_store_through_the_child(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    writer = ProcessWriter(url, config(inputs="redacted", redact_fields=["user_id"]))
    await writer.start()
    assert writer.submit(raw(1, input=b'{"user_id": "u-1"}'))
    assert writer.submit(record(2, prediction=["a"], scores=[0.4, 0.6]))
    await writer.flush()  # visible within a flush, as feedback joins need
    rows = {r.request_id: r for r in read_since(engine)}
    assert (rows["r1"].prediction, rows["r1"].scores) == ('["b"]', '[{"a":0.25,"b":0.75}]')
    assert rows["r1"].input == '{"user_id":"[redacted]"}'
    assert (rows["r2"].prediction, rows["r2"].scores) == ('["a"]', "[0.4,0.6]")
    await writer.close()
    assert (writer.written, writer.dropped) == (2, 0)


def test_a_requests_body_is_shaped_once_for_all_its_rows() -> None:
    class Counted(InputPolicy):
        calls = 0

        def shape_input(self, body: object) -> str | None:
            Counted.calls += 1
            return super().shape_input(body)

    p = Counted(LoggingConfig(inputs="redacted", redact_fields=["user_id"]))
    body = b'{"user_id": "u-1"}'
    production, shadow = raw(1, input=body), raw(1, input=bytes(body), role="shadow")
    other = raw(2, input=b'{"user_id": "u-2"}')
    rows = finish_all([production, shadow, other, record(3)], p)
    assert [r.input for r in rows] == [
        '{"user_id":"[redacted]"}', '{"user_id":"[redacted]"}', '{"user_id":"[redacted]"}',
        '{"x":1}',
    ]  # fmt: skip
    assert Counted.calls == 2  # once per request, as the gateway shaped it
    # a request's later row in a later batch: remembered by the writer's dict
    kept: dict[str, tuple[bytes, str | None]] = {}
    finish_all([production], p, kept)
    assert finish_all([shadow], p, kept)[0].input == '{"user_id":"[redacted]"}'
    assert Counted.calls == 3
