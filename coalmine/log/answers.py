"""Gateway calls as log records, decoded by the log's writer rather than on the request path.

`raw_record` is what the gateway builds per upstream call: the answer's bytes, not yet read.
`finish` is what the writer (the writer process, or the writer thread's task) does before the
insert: read the prediction and scores with the protocol's `parse_response`, and shape an input
the gateway deferred, giving the very `PredictionRecord` the gateway used to build.

An answer over MAX_SHIPPED_ANSWER_BYTES is read by the gateway as before, so that a large
body (an embedding, an image) never crosses the writer's pipe whole; only what it reads does.

Decoding is plain JSON and binary-tensor parsing (`coalmine.gateway.protocols`): the protocol
is named by the gateway, from the request's path, never by the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from coalmine.gateway.protocols import PROTOCOLS, parse_response
from coalmine.log.policy import InputPolicy
from coalmine.log.record import LogRecord, PredictionRecord, RawRecord
from coalmine.log.throttle import ThrottledLog

__all__ = ["MAX_SHIPPED_ANSWER_BYTES", "finish", "finish_all", "raw_record"]

log = logging.getLogger("coalmine.log.writer")
_throttled = ThrottledLog(log)

# Model answers are a few hundred bytes; past this the gateway reads the answer itself (as it
# did for every answer before) and ships only the prediction and scores.
MAX_SHIPPED_ANSWER_BYTES = 64 << 10
_BY_NAME = {p.name: p for p in PROTOCOLS}


def raw_record(
    request_id: str,
    model: str,
    version: str,
    role: str,
    ts: float,
    latency_ms: float,
    status: int,
    error_class: str | None,
    protocol: str,
    answer: bytes | None,  # None: no response arrived
    header_length: str | None,
    scores_field: str | None,
    input: str | bytes | None,
    slices: dict[str, Any],
    canary_weight_bp: int,
    rollout_id: int | None,
) -> RawRecord:
    """The record of one upstream call; its answer is read by the writer (module doc)."""
    if answer is not None and type(answer) is not bytes:  # a bytearray or view: pickled, kept
        answer = bytes(answer)
    if answer is not None and len(answer) > MAX_SHIPPED_ANSWER_BYTES:
        prediction, scores = _read(protocol, answer, status, header_length, scores_field)
        return RawRecord(
            request_id, model, version, role, ts, latency_ms, status, error_class, protocol,
            None, None, None, input, slices, canary_weight_bp, rollout_id, prediction, scores,
        )  # fmt: skip
    return RawRecord(
        request_id, model, version, role, ts, latency_ms, status, error_class, protocol,
        answer, header_length, scores_field, input, slices, canary_weight_bp, rollout_id,
    )  # fmt: skip


def _read(
    protocol: str, answer: bytes, status: int, header_length: str | None, field: str | None
) -> tuple[Any, Any]:
    return parse_response(_BY_NAME[protocol], answer, status, header_length, field)


# request id -> (a deferred body, its shaped text): a request's production call and its mirror
# copies share one body, shaped once as the gateway shaped it once
_Shaped = dict[str, tuple[bytes, str | None]]


def finish(
    record: RawRecord, policy: InputPolicy, shaped: _Shaped | None = None
) -> PredictionRecord:
    """The row of a gateway call: its answer read, its input shaped."""
    prediction, scores = record.prediction, record.scores
    text = record.input
    try:
        if record.answer is not None:
            prediction, scores = _read(
                record.protocol, record.answer, record.status, record.header_length,
                record.scores_field,
            )  # fmt: skip
        if isinstance(text, bytes):
            text = _shape(record.request_id, text, policy, {} if shaped is None else shaped)
    except Exception as exc:  # one odd answer must not cost the batch its rows
        _throttled.warning(
            "finish", "prediction log: answer of %s not read: %r", record.request_id, exc
        )
        prediction = scores = None
        text = None if isinstance(text, bytes) else text
    return PredictionRecord(
        record.request_id, record.model, record.version, record.role, record.ts,
        record.latency_ms, record.status, record.error_class, prediction, text,
        record.slices, record.canary_weight_bp, record.rollout_id, scores, record.sample_weight,
    )  # fmt: skip


def _shape(request_id: str, body: bytes, policy: InputPolicy, shaped: _Shaped) -> str | None:
    known = shaped.get(request_id)
    if known is not None and known[0] == body:
        return known[1]
    text = policy.shape_input(body)
    shaped[request_id] = (body, text)
    return text


def finish_all(
    records: Iterable[LogRecord], policy: InputPolicy, shaped: _Shaped | None = None
) -> list[PredictionRecord]:
    """`records` as rows: raw ones finished, decoded ones as they are. `shaped` remembers
    the inputs shaped so far (a request's rows may come in different batches); the caller
    bounds it."""
    shaped = {} if shaped is None else shaped
    return [finish(r, policy, shaped) if type(r) is RawRecord else r for r in records]  # type: ignore[misc]
