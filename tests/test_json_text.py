"""compact_json: the stored JSON text is exactly what the stdlib's compact encoder writes
(built once in C now), errors included, and one value can be encoded by threads at once."""

from __future__ import annotations

import datetime
import json
import math
import threading
import time
from typing import Any

import pytest

from coalmine.json_text import compact_json

_reference = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
_reference_ascii = json.JSONEncoder(separators=(",", ":"), default=str).encode


class Label(str):
    pass


class Count(int):
    pass


VALUES: list[Any] = [
    {"country": "DE"},
    {"predictions": [[0.1, 0.9]], "model_version": "v1", "n": 10**30, "ok": True, "x": None},
    [1.5e-05, 2.5, -0.0, 1e300, math.inf, -math.inf, math.nan],
    {"é": "日本 \t\n\\ \" '", "nested": {"a": [{"b": []}, {}], "c": ()}},
    {3: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    {"when": datetime.datetime(2026, 11, 30, 17, 0), "set": {1}},  # not JSON: their str
    "a plain string",
    Label("a str subclass"),
    Count(7),
    [Label("x"), Count(3), (1, 2)],
    42,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_text_is_the_stdlib_compact_encoders(value: Any) -> None:
    assert compact_json(value) == _reference(value)


def test_a_lone_surrogate_is_written_escaped() -> None:
    value = {"s": "\ud800 é"}
    assert compact_json(value) == _reference_ascii(value) == '{"s":"\\ud800 \\u00e9"}'


def test_a_cycle_and_a_bad_key_raise_what_the_stdlib_raises() -> None:
    cycle: list[Any] = [1]
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        compact_json(cycle)
    with pytest.raises(TypeError, match="keys must be"):
        compact_json({(1, 2): "tuple key"})
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        compact_json(deep)
    assert compact_json([1, {"a": 2}]) == '[1,{"a":2}]'  # nothing left over from them


class Slow:
    """Not JSON: written as its str, which lets other threads run meanwhile."""

    def __str__(self) -> str:
        time.sleep(0.001)
        return "slow"


def test_threads_encoding_one_value_at_once_get_its_text() -> None:
    shared = {"a": [Slow(), {"b": Slow()}], "c": Slow()}
    expected = _reference(shared)
    texts: list[str] = []
    errors: list[BaseException] = []

    def encode() -> None:
        try:
            for _ in range(20):
                texts.append(compact_json(shared))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=encode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and texts == [expected] * 80
