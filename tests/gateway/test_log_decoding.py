"""The prediction log's rows are the same whether the gateway decodes an answer on the request
path (as it did) or the log's writer decodes it (as it does now), for every protocol and
kind of answer, in both writers (the child process and the thread), through the real gateway
and store. The oracle is what the request path used to compute: `parse_response` on the
upstream's answer and `InputPolicy.shape_input` on the request body, encoded as a row.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coalmine.binary_tensors import HEADER_LENGTH, encode_tensor
from coalmine.gateway.protocols import (
    MAX_LOGGED_TENSOR_BYTES,
    PLAIN,
    V1,
    V2,
    Protocol,
    parse_response,
)
from coalmine.log.answers import MAX_SHIPPED_ANSWER_BYTES
from coalmine.log.policy import InputPolicy
from coalmine.log.record import LogRecord, PredictionRecord, RawRecord
from coalmine.store.predictions import encode_record
from tests.gateway.conftest import StartGateway, make_config, serve_app

PATHS = {V1: "/v1/models/m:predict", V2: "/v2/models/m/infer", PLAIN: "/models/m/predict"}


def _binary(outputs: list[tuple[dict[str, Any], bytes]]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {"outputs": [{**t, "parameters": {**t.get("parameters", {}),
                                          "binary_data_size": len(raw)}} for t, raw in outputs]}
    ).encode()  # fmt: skip
    return head + b"".join(raw for _, raw in outputs), {HEADER_LENGTH: str(len(head))}


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


_LABELS = encode_tensor("BYTES", ["b"])
_PROBA = encode_tensor("FP32", [0.25, 0.75])
_EMBEDDING = bytes(MAX_LOGGED_TENSOR_BYTES + 4)  # zeros: too large a tensor to log

# answer kind -> (protocol, status, body, extra response headers)
ANSWERS: dict[str, tuple[Protocol, int, bytes, dict[str, str]]] = {
    "v1 scores named by classes": (V1, 200, _json(
        {"predictions": ["b"], "probabilities": [[0.25, 0.75]], "classes": ["a", "b"]}), {}),
    "v1 without scores": (V1, 200, _json({"predictions": [1, 0]}), {}),
    "v2 json, two outputs": (V2, 200, _json({"model_name": "m", "outputs": [
        {"name": "predict", "datatype": "BYTES", "shape": [1], "data": ["b"]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [1, 2], "data": [0.1, 0.9],
         "parameters": {"classes": ["a", "b"]}}]}), {}),
    "v2 binary tensors": (V2, 200, *_binary([
        ({"name": "predict", "datatype": "BYTES", "shape": [1]}, _LABELS),
        ({"name": "predict_proba", "datatype": "FP32", "shape": [1, 2],
          "parameters": {"classes": ["a", "b"]}}, _PROBA)])),
    "v2 binary, a tensor too large to log": (V2, 200, *_binary([
        ({"name": "predict", "datatype": "BYTES", "shape": [1]}, _LABELS),
        ({"name": "embedding", "datatype": "FP32", "shape": [len(_EMBEDDING) // 4]},
         _EMBEDDING)])),
    "v2 binary, malformed header length": (V2, 200, b"{}", {HEADER_LENGTH: "abc"}),
    # the binary extension's header is V2's: a V1 answer carrying it is read as JSON
    "v1 with a stray header length": (V1, 200, _json({"predictions": ["b"]}), {HEADER_LENGTH: "4"}),
    "plain, scores by class": (PLAIN, 200, _json(
        {"prediction": "b", "probabilities": {"a": 0.3, "b": 0.7}}), {}),
    "plain, an OpenAI-style answer": (PLAIN, 200, _json({"id": "c1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}), {}),
    "oversized json answer": (V1, 200, _json(
        {"predictions": list(range(MAX_SHIPPED_ANSWER_BYTES // 4))}), {}),
    "server error": (V1, 500, _json({"error": "boom", "predictions": [1]}), {}),
    "client error": (PLAIN, 422, _json({"error": "missing instances"}), {}),
    "not json": (V1, 200, b"<html>ok</html>", {}),
    "not utf-8": (PLAIN, 200, b"\xff\xfe{", {}),
    "plain, a lone surrogate": (PLAIN, 200, b'{"prediction": "\\ud800"}', {}),
    "empty body": (V1, 200, b"", {}),
    "nested too deep to read": (V1, 200, b"[" * 5000 + b"]" * 5000, {}),
}  # fmt: skip

# request bodies: JSON to redact, not JSON (logged as its hash), many brackets (shaped by the
# gateway itself), and larger than what is deferred to the writer
REQUESTS: dict[str, bytes] = {
    "json": _json({"instances": [{"user_id": "u-1", "features": [0.1, 0.2]}]}),
    "not json": b"a=1&user_id=u-1",
    "many brackets": _json({"instances": [[i] for i in range(150)], "user_id": "u-2"}),
    "large": _json({"instances": [{"user_id": "u-3", "f": "x" * (70 << 10)}]}),
    # JSON's "\ud800" escape reads as a lone surrogate, which UTF-8 cannot hold: deferred to
    # the writer, and (past max_input_bytes) shaped on the request path
    "lone surrogates": b'{"instances": [{"user_id": "u-5", "t": "\\ud800"}]}',
    "lone surrogates, large": b'{"instances": [{"t": "' + b"\\udfff" * 200 + b'"}]}',
}


class Answers:
    """An upstream answering each request with the answer its X-Answer header names."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        _, status, body, headers = ANSWERS[request.headers["X-Answer"]]
        return web.Response(body=body, status=status, headers=headers)

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 24)
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner, self.url = await serve_app(app, shutdown_timeout=0.1)


@pytest.fixture
async def answers() -> AsyncIterator[Answers]:
    upstream = Answers()
    await upstream.start()
    yield upstream
    assert upstream.runner is not None
    await upstream.runner.cleanup()


def _expected(answer: str, request: str, policy: InputPolicy) -> dict[str, Any]:
    """The row's decoded columns as the request path used to compute them."""
    protocol, status, body, headers = ANSWERS[answer]
    length = headers.get(HEADER_LENGTH) if protocol is V2 else None
    prediction, scores = parse_response(protocol, body, status, length, None)
    shaped = policy.shape_input(REQUESTS[request])
    decoded = PredictionRecord("r", "m", "v", "stable", 0.0, 0.0, status, None, prediction,
                               shaped, {}, 0, None, scores)  # fmt: skip
    row = encode_record(decoded)
    return {k: row[k] for k in ("status", "prediction", "scores", "input")}


@pytest.mark.parametrize("writer", ["process", "thread"])
@pytest.mark.parametrize("inputs", ["redacted", "hashed", "full"])
async def test_rows_are_what_the_request_path_decoded_for_every_answer_and_input(
    tmp_path: Path, answers: Answers, start_gateway: StartGateway, writer: str, inputs: str
) -> None:
    config = make_config(
        tmp_path,
        {"v1": answers.url, "v3": answers.url},
        routing={"shadow": "v3", "mirror_share": 100},  # the mirror's rows too
        logging={
            "inputs": inputs,
            "redact_fields": ["user_id"],
            "writer": writer,
            "max_input_bytes": 512,
        },
    )
    gw = await start_gateway(config)
    sent = 0
    for answer, (protocol, status, body, _) in ANSWERS.items():
        for request in REQUESTS:
            got_status, _, got_body = await gw.post(
                PATHS[protocol],
                REQUESTS[request],
                headers={"X-Answer": answer, "X-Request-ID": f"{answer}|{request}"},
            )
            assert (got_status, got_body) == (status, body), answer
            sent += 1
    await gw.stop()  # drains the mirror, flushes the log
    rows = gw.rows()
    assert len(rows) == 2 * sent  # production's and the shadow's
    policy = InputPolicy(config.logging)
    for row in rows:
        answer, request = row.request_id.split("|")
        got = {k: getattr(row, k) for k in ("status", "prediction", "scores", "input")}
        assert got == _expected(answer, request, policy), (row.role, answer, request)


async def test_the_request_path_hands_the_writer_the_answer_and_the_body_undecoded(
    tmp_path: Path, answers: Answers, start_gateway: StartGateway
) -> None:
    config = make_config(
        tmp_path,
        {"v1": answers.url},
        logging={"inputs": "redacted", "redact_fields": ["user_id"], "writer": "thread"},
    )
    gw = await start_gateway(config)
    writer = gw.runner.gateway.writer
    kept: list[LogRecord] = []
    submit = writer.submit

    def keep(record: LogRecord) -> bool:  # the real writer, watched
        kept.append(record)
        return submit(record)

    writer.submit = keep
    for answer in ("v1 scores named by classes", "oversized json answer"):
        status, _, _ = await gw.post(PATHS[V1], REQUESTS["json"], headers={"X-Answer": answer})
        assert status == 200
    await gw.stop()
    small, large = kept
    assert isinstance(small, RawRecord) and isinstance(large, RawRecord)
    # a small answer crosses as the upstream's bytes; the request body is shaped later
    assert small.answer == ANSWERS["v1 scores named by classes"][2]
    assert small.input == REQUESTS["json"]
    # a large one is read by the gateway: only the prediction crosses to the writer
    assert large.answer is None and large.prediction == list(range(MAX_SHIPPED_ANSWER_BYTES // 4))
    assert writer.written == 2
    assert [r.input for r in gw.rows()] == ['{"instances":[{"user_id":"[redacted]","features":'
                                            '[0.1,0.2]}]}'] * 2  # fmt: skip
