"""What of a request the prediction log keeps: the input policy and slice attributes.

Pure functions, no I/O: the gateway calls them on the request path, so they must be cheap.

Input modes (`LoggingConfig.inputs`):
- full: the JSON text of the body (compact), or the raw body decoded as UTF-8;
- redacted: like full, with every object key named in `redact_fields` (at any depth,
  case-insensitively) replaced by "[redacted]". A body that is not JSON cannot be redacted,
  so it is logged as its hash instead: the policy fails closed;
- hashed: the SHA-256 hex digest of the canonical body (sorted keys, compact), so equal
  inputs can be matched without storing them;
- none: nothing.
Text longer than `max_input_bytes` (UTF-8) is cut there and ends with TRUNCATION_MARKER;
0 means no cap. A digest is never cut.

`shape_later` is what the gateway calls: in redacted and hashed modes it hands a small raw
body on as it is, for the log's writer to shape with `shape_input` off the request path
(parsing, redacting and re-encoding a body is most of what logging an input costs).

JSON nested deeper than MAX_JSON_DEPTH is refused (`JsonTooDeep`) wherever a body is read
(`loads_bounded`): walking it would exhaust Python's recursion limit, and no model input
needs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from coalmine.config import LoggingConfig, SliceField
from coalmine.json_text import compact_json, is_utf8

__all__ = [
    "MAX_DEFERRED_INPUT_BYTES",
    "MAX_JSON_DEPTH",
    "REDACTED",
    "TRUNCATION_MARKER",
    "InputPolicy",
    "JsonTooDeep",
    "canonical_json",
    "extract_slices",
    "json_path",
    "loads_bounded",
    "shape_input",
]

REDACTED = "[redacted]"
TRUNCATION_MARKER = "…[truncated]"
MAX_JSON_DEPTH = 100
# a body larger than this (or than max_input_bytes) is shaped where it arrives: the writer's
# pipe and buffers carry small ones
MAX_DEFERRED_INPUT_BYTES = 64 << 10
_NOT_JSON = object()
_DEFERRED_MODES = ("redacted", "hashed")


class JsonTooDeep(Exception):
    """A JSON document nested deeper than MAX_JSON_DEPTH levels (not a ValueError: it is
    valid JSON, refused, not unreadable)."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _deeper_than(value: Any, limit: int) -> bool:
    # iterative, so the check itself cannot hit the recursion limit
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def loads_bounded(data: bytes | str) -> Any:
    """`json.loads`, refusing documents nested deeper than MAX_JSON_DEPTH (JsonTooDeep).

    ValueError and UnicodeDecodeError for unreadable input, as json.loads.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep() from None
    # fewer brackets than the limit cannot nest deeper than it: most bodies stop here
    brackets = (
        data.count("[") + data.count("{")
        if isinstance(data, str)
        else data.count(b"[") + data.count(b"{")
    )
    too_many = brackets > MAX_JSON_DEPTH and isinstance(value, dict | list)
    if too_many and _deeper_than(value, MAX_JSON_DEPTH):
        raise JsonTooDeep()
    return value


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the same value always gives the same text."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if is_utf8(text):
        return text
    return json.dumps(value, sort_keys=True, separators=(",", ":"))  # lone surrogates escaped


def _parse(body: bytes) -> Any:
    try:
        return loads_bounded(body)  # JsonTooDeep goes to the caller
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _redact(value: Any, names: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in names else _redact(v, names) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, names) for v in value]
    return value


def _digest(body: Any) -> str:
    data = body if isinstance(body, bytes) else canonical_json(body).encode()
    return hashlib.sha256(data).hexdigest()


def truncate(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes (plus the marker); 0 = no cap."""
    if max_bytes <= 0 or len(text) <= max_bytes // 4:  # fast path: 4 bytes max per char
        return text
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode(errors="ignore") + TRUNCATION_MARKER


def _truncate_bytes(raw: bytes, max_bytes: int) -> str:
    # cut before decoding: a large body is never decoded whole just to be thrown away
    if max_bytes <= 0 or len(raw) <= max_bytes:
        return raw.decode(errors="replace")
    return raw[:max_bytes].decode(errors="ignore") + TRUNCATION_MARKER


class InputPolicy:
    """Shapes a request body for the log according to a LoggingConfig."""

    def __init__(self, config: LoggingConfig) -> None:
        self.mode = config.inputs
        self.max_bytes = config.max_input_bytes
        self.redact_names = names = frozenset(name.lower() for name in config.redact_fields)

        def redact_object(obj: dict[str, Any]) -> dict[str, Any]:
            for key in obj:  # its inner objects were redacted already (the hook goes up)
                if key.lower() in names:
                    obj[key] = REDACTED
            return obj

        # the body parsed and redacted in one pass: `_redact` walks every list item again
        self._parse_redacted = json.JSONDecoder(object_hook=redact_object).decode
        # no larger than the text it becomes may be: a buffer of deferred bodies holds no
        # more than one of shaped texts would
        self.defer_bytes = (
            min(self.max_bytes, MAX_DEFERRED_INPUT_BYTES) if self.max_bytes > 0
            else MAX_DEFERRED_INPUT_BYTES
        )  # fmt: skip

    def shape_input(self, body: Any) -> str | None:
        """The text to log for `body`: parsed JSON (any JSON value, as `loads_bounded`
        gives it) or raw `bytes`; JsonTooDeep when the bytes are JSON nested too deep to
        redact or hash."""
        if self.mode == "none":
            return None
        if isinstance(body, bytes | bytearray):
            raw = bytes(body)
            if self.mode == "redacted" and raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
                return self._redacted_bytes(raw)  # too shallow for JsonTooDeep
            parsed = _parse(raw) if self.mode != "full" else _NOT_JSON
            if self.mode == "hashed":
                return _digest(raw if parsed is _NOT_JSON else parsed)
            if self.mode == "redacted":
                if parsed is _NOT_JSON:
                    return _digest(raw)
                return truncate(compact_json(_redact(parsed, self.redact_names)), self.max_bytes)
            return _truncate_bytes(raw, self.max_bytes)
        if self.mode == "hashed":
            return _digest(body)
        if self.mode == "redacted":
            body = _redact(body, self.redact_names)
        return truncate(compact_json(body), self.max_bytes)

    def _redacted_bytes(self, raw: bytes) -> str:
        """What the redacted mode gives for `raw` (as below), parsed and redacted at once."""
        try:  # decoded as json.loads decodes bytes (UTF-8, -16 or -32)
            redacted = self._parse_redacted(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        except (ValueError, UnicodeDecodeError):
            return _digest(raw)
        return truncate(compact_json(redacted), self.max_bytes)

    def shape_later(self, body: Any) -> str | bytes | None:
        """`shape_input(body)`, or the raw `body` itself for the log's writer to shape.

        Deferred only when `shape_input` would give the writer the same text and cannot
        refuse it: raw bytes in redacted or hashed mode, at most `defer_bytes` long
        (max_input_bytes, at most MAX_DEFERRED_INPUT_BYTES), with no more brackets than
        MAX_JSON_DEPTH (so never JsonTooDeep, which the request path must answer with a
        400). Full mode only decodes and cuts: nothing to save.
        """
        if (
            type(body) is bytes
            and self.mode in _DEFERRED_MODES
            and len(body) <= self.defer_bytes
            and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
        ):
            return body
        return self.shape_input(body)


def shape_input(body: Any, config: LoggingConfig) -> str | None:
    """One-off form of `InputPolicy(config).shape_input(body)`."""
    return InputPolicy(config).shape_input(body)


@lru_cache(maxsize=1024)
def _split_path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def json_path(obj: Any, dotted: str) -> Any:
    """The value at a dotted path such as `instances.0.device`; None when absent.

    A segment indexes a list when it is a non-negative integer, else it is an object key.
    """
    for part in _split_path(dotted):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isascii() and part.isdigit():
            index = int(part)
            obj = obj[index] if index < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()  # plain dicts are case-sensitive; HTTP header names are not
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _scalar(value: Any) -> Any:
    # slices are grouping keys: keep scalars, flatten anything nested to its JSON text
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return canonical_json(value)


def extract_slices(
    slice_fields: Iterable[SliceField], headers: Mapping[str, str], parsed_json: Any
) -> dict[str, Any]:
    """Slice attribute name -> value (None when the header or JSON field is absent)."""
    out: dict[str, Any] = {}
    for field in slice_fields:
        if field.header:
            out[field.name] = _header(headers, field.header)
        elif field.json_field:
            out[field.name] = _scalar(json_path(parsed_json, field.json_field))
    return out
