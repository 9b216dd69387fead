"""JSON text to store: compact, non-ASCII as it is, unless that text cannot be UTF-8.

JSON's "\\ud800" escape reads as a lone surrogate, which no store takes as UTF-8 text (and
no hash takes as bytes): such a value is written with every non-ASCII character escaped —
the same value, other text. Used by the input policy (log/policy.py) and the log table's
row encoding (store/predictions.py), which must agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

__all__ = ["compact_json", "is_utf8"]


def _compact(ensure_ascii: bool) -> Callable[[Any], str]:
    """`JSONEncoder(separators=(",", ":"), ensure_ascii=..., default=str).encode`, the same
    text for every value, with CPython's C encoder built once rather than per call.

    json.dumps with any option builds a new encoder per call, which tripled the cost of
    encoding a row's prediction and slices; a JSONEncoder built once still builds its C
    encoder (and a closure) on every `encode`, ~0.5 µs of a 1–2 µs call, five calls per
    mirrored request in the log's writer. default=str: a value holding a non-JSON type is
    written as its text, not lost. The C encoder is built without the circular-reference
    marks (a dict it would share between threads): a cycle, or nesting too deep for the C
    stack, raises RecursionError, and the value then goes through the checked encoder,
    which raises what it always raised (ValueError for a cycle).
    """
    checked = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, default=str)
    string = _encoder.encode_basestring_ascii if ensure_ascii else _encoder.encode_basestring
    make = getattr(_encoder, "c_make_encoder", None)  # not in typeshed
    if make is None:  # an interpreter without the C accelerator
        return checked.encode
    fast = make(None, str, string, None, ":", ",", False, False, True)
    join = "".join

    def compact(value: Any) -> str:
        if isinstance(value, str):
            return string(value)  # as JSONEncoder.encode does
        try:
            return join(fast(value, 0))
        except RecursionError:
            return checked.encode(value)

    return compact


_compact_utf8 = _compact(ensure_ascii=False)
_compact_ascii = _compact(ensure_ascii=True)


def is_utf8(text: str) -> bool:
    """False when `text` holds a lone surrogate (it then cannot be encoded as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def compact_json(value: Any) -> str:
    """Compact JSON text, non-ASCII as it is; all escaped when it holds a lone surrogate."""
    text = _compact_utf8(value)
    return text if is_utf8(text) else _compact_ascii(value)
