"""The binary tensor extension's codec: every datatype round-trips; bad framing is named."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from coalmine.binary_tensors import (
    BinaryTensorError,
    decode_body,
    decode_tensor,
    encode_tensor,
    header_length,
)

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


@pytest.mark.parametrize("datatype", sorted(NUMPY))
def test_fixed_size_datatypes_match_numpys_little_endian_bytes(datatype: str) -> None:
    values = [True, False, True] if datatype == "BOOL" else [0, 1, 2, 7]
    raw = np.asarray(values, dtype=NUMPY[datatype]).astype(f"<{np.dtype(NUMPY[datatype]).char}")
    assert encode_tensor(datatype, values) == raw.tobytes()
    assert decode_tensor(datatype, raw.tobytes()) == values


def test_bf16_is_the_top_half_of_fp32() -> None:
    raw = encode_tensor("BF16", [1.0, -2.5])
    assert raw == struct.pack("<2H", 0x3F80, 0xC020)
    assert decode_tensor("BF16", raw) == [1.0, -2.5]


def test_bytes_items_are_length_prefixed_and_nested_lists_flatten() -> None:
    raw = encode_tensor("BYTES", [["setosa", "virginica"], [b"\xff", ""]])
    assert raw[:10] == struct.pack("<I", 6) + b"setosa"
    assert decode_tensor("BYTES", raw) == ["setosa", "virginica", "\xff", ""]


@pytest.mark.parametrize(
    ("datatype", "raw", "reason"),
    [
        ("FP64", b"\x00" * 12, "not a multiple of 8"),
        ("BYTES", b"\x05\x00\x00\x00abc", "runs past"),
        ("BYTES", b"\x01\x00", "inside an item's 4-byte length"),
        ("COMPLEX", b"", "unknown datatype"),
    ],
)
def test_malformed_raw_data_says_why(datatype: str, raw: bytes, reason: str) -> None:
    with pytest.raises(BinaryTensorError, match=reason):
        decode_tensor(datatype, raw)


def _body(outputs: list[dict], *blocks: bytes) -> tuple[bytes, int]:
    head = json.dumps({"outputs": outputs}).encode()
    return head + b"".join(blocks), len(head)


def test_a_body_mixing_json_and_raw_outputs_decodes_in_order() -> None:
    labels, proba = encode_tensor("BYTES", ["a", "b"]), encode_tensor("FP32", [0.25, 0.75])
    body, n = _body(
        [
            {"name": "label", "datatype": "BYTES", "shape": [2],
             "parameters": {"binary_data_size": len(labels)}},
            {"name": "json", "datatype": "INT64", "shape": [1], "data": [9]},
            {"name": "p", "datatype": "FP32", "shape": [2],
             "parameters": {"binary_data_size": len(proba), "classes": ["a", "b"]}},
        ],
        labels, proba,
    )  # fmt: skip
    outputs = decode_body(body, n, "outputs")["outputs"]
    assert [o["data"] for o in outputs] == [["a", "b"], [9], [0.25, 0.75]]


@pytest.mark.parametrize(
    ("size", "extra", "reason"),
    [
        (16, b"", "needs 16 bytes"),
        (-1, b"", "non-negative integer"),
        (8, b"\x00", "declare 8"),
    ],
)
def test_sizes_that_do_not_add_up_are_refused(size: int, extra: bytes, reason: str) -> None:
    out = {"name": "y", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": size}}
    body, n = _body([out], struct.pack("<d", 1.0) + extra)
    with pytest.raises(BinaryTensorError, match=reason):
        decode_body(body, n, "outputs")


def test_header_length_and_header_errors() -> None:
    assert header_length(None) is None and header_length(" 12 ") == 12
    with pytest.raises(BinaryTensorError, match="non-negative integer"):
        header_length("-3")
    with pytest.raises(BinaryTensorError, match="only 3 bytes"):
        decode_body(b"{}x", 10, "outputs")
    with pytest.raises(BinaryTensorError, match="not valid JSON"):
        decode_body(b"{nope", 5, "outputs")
    with pytest.raises(BinaryTensorError, match="no 'outputs' list"):
        decode_body(b"{}", 2, "outputs")
