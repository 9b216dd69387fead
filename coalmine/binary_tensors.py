"""The binary tensor extension of the Open Inference Protocol V2 (KServe, Triton): pure codec.

A request or response body may be a JSON header of `Inference-Header-Content-Length` bytes
followed by raw tensor data. Each tensor sent raw carries `parameters.binary_data_size` (its
byte count) and no `data`; the raw blocks follow in the order of those tensors in the header.
Numbers are little-endian, row-major; BOOL is one byte; BYTES is a sequence of items, each a
4-byte little-endian length and that many bytes.

Used by the gateway (to log a binary response's prediction) and by `serve-model` (to read
binary inputs and answer with binary outputs). No I/O; malformed input raises
`BinaryTensorError` naming what is wrong.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "HEADER_LENGTH",
    "BinaryTensorError",
    "decode_body",
    "decode_tensor",
    "encode_tensor",
    "header_length",
]

HEADER_LENGTH = "Inference-Header-Content-Length"

# struct codes of the fixed-size datatypes; BF16 and BYTES are handled apart
_CODES = {
    "BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q",
    "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
    "FP16": "e", "FP32": "f", "FP64": "d",
}  # fmt: skip
_LENGTH = struct.Struct("<I")


class BinaryTensorError(ValueError):
    """A body that does not follow the binary tensor extension; the message says why."""


def header_length(value: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header's value; None when absent."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # '²' is a digit
        raise BinaryTensorError(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    return int(value)


def decode_tensor(datatype: str, raw: bytes | memoryview) -> list[Any]:
    """The flat list of values in one tensor's raw block. BYTES items decode as UTF-8 text
    when they are valid UTF-8 (labels usually are), else as latin-1 text."""
    if datatype == "BYTES":
        return _decode_bytes(memoryview(raw))
    if datatype == "BF16":  # the top half of an FP32
        if len(raw) % 2:
            raise BinaryTensorError(f"BF16 data of {len(raw)} bytes is not a whole number")
        n = len(raw) // 2
        words = struct.pack(f"<{n}I", *(h << 16 for h in struct.unpack(f"<{n}H", raw)))
        return list(struct.unpack(f"<{n}f", words))
    code = _CODES.get(datatype)
    if code is None:
        raise BinaryTensorError(f"unknown datatype {datatype!r}")
    size = struct.calcsize(code)
    if len(raw) % size:
        raise BinaryTensorError(
            f"{datatype} data of {len(raw)} bytes is not a multiple of {size} bytes"
        )
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


def _decode_bytes(raw: memoryview) -> list[Any]:
    items: list[Any] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise BinaryTensorError("BYTES data ends inside an item's 4-byte length")
        (n,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + n > end:
            raise BinaryTensorError(f"BYTES item of {n} bytes runs past the tensor's data")
        item = bytes(raw[offset : offset + n])
        offset += n
        try:
            items.append(item.decode())
        except UnicodeDecodeError:
            items.append(item.decode("latin-1"))
    return items


def _flat(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list | tuple):
            out.extend(_flat(value))
        else:
            out.append(value)
    return out


def encode_tensor(datatype: str, values: Sequence[Any]) -> bytes:
    """Raw bytes of a tensor's values (nested lists are flattened row-major)."""
    flat = _flat(values)
    if datatype == "BYTES":
        parts = []
        for value in flat:
            item = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(item)), item]
        return b"".join(parts)
    if datatype == "BF16":
        words = struct.unpack(f"<{len(flat)}I", struct.pack(f"<{len(flat)}f", *flat))
        return struct.pack(f"<{len(words)}H", *(w >> 16 for w in words))
    code = _CODES.get(datatype)
    if code is None:
        raise BinaryTensorError(f"unknown datatype {datatype!r}")
    try:
        return struct.pack(f"<{len(flat)}{code}", *flat)
    except struct.error as exc:
        raise BinaryTensorError(f"values do not fit {datatype}: {exc}") from exc


def decode_body(
    body: bytes, length: int, field: str, max_tensor_bytes: int | None = None
) -> dict[str, Any]:
    """The JSON header of a binary-extension body, each raw tensor's values put in `data`.

    `field` names the header's list of tensors ("inputs" in a request, "outputs" in a
    response); tensors without `parameters.binary_data_size` keep their JSON `data`. A raw
    tensor over `max_tensor_bytes` is checked but not decoded (`data` None): a reader that
    only logs must not turn a large embedding into millions of Python numbers.
    """
    if length > len(body):
        raise BinaryTensorError(
            f"{HEADER_LENGTH} is {length} but the body has only {len(body)} bytes"
        )
    try:
        header = json.loads(body[:length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BinaryTensorError(
            f"the JSON header ({length} bytes) is not valid JSON: {exc}"
        ) from exc
    if not isinstance(header, dict):
        raise BinaryTensorError("the JSON header must be an object")
    tensors = header.get(field)
    if not isinstance(tensors, list):
        raise BinaryTensorError(f"the JSON header has no '{field}' list")
    raw = memoryview(body)[length:]
    offset = 0
    for i, tensor in enumerate(tensors):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        size = parameters["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BinaryTensorError(
                f"{field}[{i}].parameters.binary_data_size must be a non-negative integer"
            )
        if offset + size > len(raw):
            raise BinaryTensorError(
                f"{field}[{i}] needs {size} bytes at offset {offset}; the binary part has "
                f"{len(raw)}"
            )
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str):
            raise BinaryTensorError(f"{field}[{i}]: missing field 'datatype'")
        if max_tensor_bytes is not None and size > max_tensor_bytes:
            tensor["data"] = None
        else:
            try:
                tensor["data"] = decode_tensor(datatype, raw[offset : offset + size])
            except BinaryTensorError as exc:
                raise BinaryTensorError(f"{field}[{i}]: {exc}") from None
        offset += size
    if offset != len(raw):
        raise BinaryTensorError(
            f"the binary part has {len(raw)} bytes but the {field} declare {offset}"
        )
    return header
