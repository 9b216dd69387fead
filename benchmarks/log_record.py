"""Micro-benchmark (not a test): what one prediction-log record costs the gateway's process.

Per upstream call the gateway builds a record and `ProcessWriter` turns it into a tuple and
pickles it into a frame for the writer process. Before: the answer decoded
(`parse_response`) and the input shaped (`InputPolicy.shape_input`) on the request path,
into a `PredictionRecord`. Now: a `RawRecord` holding the answer's bytes and, in redacted or
hashed mode, the request body, both decoded by the writer process (`answers.finish`, whose
cost is printed too: it moved there, it did not vanish).

    .venv/bin/python benchmarks/log_record.py [--repeat 5] [--number 20000]

Input shaping is counted once per record here; the gateway shapes once per request (for the
production call and its mirror copies), so for a request with a 100% mirror halve it.
Prints µs per record (the best of --repeat runs, each --number records) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from coalmine.binary_tensors import encode_tensor
from coalmine.config import LoggingConfig
from coalmine.gateway.protocols import PLAIN, V1, V2, Protocol, parse_response
from coalmine.log.answers import finish, raw_record
from coalmine.log.policy import InputPolicy
from coalmine.log.process_writer import FIELDS, RAW_FIELDS
from coalmine.log.record import PredictionRecord

# the body of benchmarks/gateway.py's requests (perf-baseline/post.lua)
REQUEST = (
    b'{"instances":[{"user_id":"u-000123","features":[0.12,0.55,0.91,0.33,0.07,0.61,0.48,'
    b'0.29,0.84,0.15],"country":"DE","device":"ios","session_len":371,'
    b'"ts":"2024-05-01T12:00:00Z"}]}'
)


def _binary() -> tuple[bytes, str]:
    labels, proba = encode_tensor("BYTES", ["b"] * 4), encode_tensor("FP32", [0.25, 0.75] * 4)
    head = json.dumps({"outputs": [
        {"name": "predict", "datatype": "BYTES", "shape": [4],
         "parameters": {"binary_data_size": len(labels)}},
        {"name": "predict_proba", "datatype": "FP32", "shape": [4, 2],
         "parameters": {"binary_data_size": len(proba), "classes": ["a", "b"]}},
    ]}).encode()  # fmt: skip
    return head + labels + proba, str(len(head))


_BINARY, _LENGTH = _binary()
# case -> (protocol, answer, its Inference-Header-Content-Length)
ANSWERS: dict[str, tuple[Protocol, bytes, str | None]] = {
    "benchmark upstream (plain JSON)": (
        PLAIN, b'{"model":"m","version":"v1","prediction":[0.9137],"label":"pos"}', None),
    "V1 with scores and classes": (V1, json.dumps(
        {"predictions": ["b"] * 4, "probabilities": [[0.25, 0.75]] * 4,
         "classes": ["a", "b"]}).encode(), None),
    "V2 binary tensors": (V2, _BINARY, _LENGTH),
}  # fmt: skip
SLICES: dict[str, Any] = {}
FRAME = 256  # rows per frame (process_writer.SEND_ROWS)


def before(policy: InputPolicy, protocol: Protocol, answer: bytes, length: str | None) -> Any:
    prediction, scores = parse_response(protocol, answer, 200, length, None)
    return PredictionRecord(
        "r", "m", "v1", "stable", 1.0, 1.0, 200, None, prediction,
        policy.shape_input(REQUEST), SLICES, 0, None, scores,
    )  # fmt: skip


def after(policy: InputPolicy, protocol: Protocol, answer: bytes, length: str | None) -> Any:
    return raw_record(
        "r", "m", "v1", "stable", 1.0, 1.0, 200, None, protocol.name, answer, length, None,
        policy.shape_later(REQUEST), SLICES, 0, None,
    )  # fmt: skip


def per_record_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def pickled_us(records: list[Any], fields: tuple[str, ...], repeat: int) -> float:
    """The tuple and the frame's pickle, per record (what `ProcessWriter` does with it)."""
    from operator import attrgetter

    as_tuple = attrgetter(*fields)

    def frame() -> None:
        pickle.dumps([as_tuple(r) for r in records], pickle.HIGHEST_PROTOCOL)

    return per_record_us(frame, 200, repeat) / len(records)


def measure(
    policy: InputPolicy, protocol: Protocol, answer: bytes, length: str | None, number: int,
    repeat: int,
) -> tuple[float, float, float]:  # fmt: skip
    """µs per record: the gateway's before and after, and the writer's after."""
    old = per_record_us(partial(before, policy, protocol, answer, length), number, repeat)
    new = per_record_us(partial(after, policy, protocol, answer, length), number, repeat)
    old += pickled_us([before(policy, protocol, answer, length)] * FRAME, FIELDS, repeat)
    new += pickled_us([after(policy, protocol, answer, length)] * FRAME, RAW_FIELDS, repeat)
    raw = after(policy, protocol, answer, length)
    return old, new, per_record_us(partial(finish, raw, policy), number, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    head = (f"{'answer':34} {'inputs':9} {'before':>8} {'after':>8} {'saved':>7} "
            f"{'writer':>8}")  # fmt: skip
    print(f"µs per record in the gateway's process (record + tuple + pickle); 'writer': "
          f"what the writer process now does per record. Load average {load}\n")  # fmt: skip
    print(head)
    print("-" * len(head))
    for inputs in ("redacted", "full"):
        policy = InputPolicy(LoggingConfig(inputs=inputs, redact_fields=["email", "user_id"]))
        for name, answer in ANSWERS.items():
            old, new, writer = measure(policy, *answer, args.number, args.repeat)
            print(f"{name:34} {inputs:9} {old:8.2f} {new:8.2f} {old - new:7.2f} {writer:8.2f}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
