"""JSON text to store: compact, non-ASCII as it is, unless that text cannot be UTF-8.

JSON's "\\ud800" escape reads as a lone surrogate, which no store takes as UTF-8 text (and
no hash takes as bytes): such a value is written with every non-ASCII character escaped —
the same value, other text. Used by the input policy (log/policy.py) and the log table's
row encoding (store/predictions.py), which must agree.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["compact_json", "is_utf8"]

# Built once: json.dumps with any option builds a new encoder per call, which tripled the
# cost of encoding a row's prediction and slices. default=str: a value holding a non-JSON
# type is written as its text, not lost.
_compact_utf8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
_compact_ascii = json.JSONEncoder(separators=(",", ":"), default=str).encode


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
