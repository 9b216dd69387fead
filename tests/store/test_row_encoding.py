"""A record encoded to a tuple (`encode_row`) and written by the log's fast paths (SQLite's
driver executemany, PostgreSQL's COPY) reads back as the Core insert of `encode_record`'s
dicts wrote it, odd values included."""

from __future__ import annotations

import datetime
import json
import math

from sqlalchemy import Engine, insert

from coalmine.store.predictions import COLUMNS, encode_record, encode_row, read_since, write_batch
from coalmine.store.schema import predictions
from tests.store.test_copy_writes import AWKWARD, record

ODD = [
    *AWKWARD,
    record(10, prediction=None, scores=None, slices=None),
    record(11, prediction={"when": datetime.date(2024, 5, 1), "ids": {7}}),  # not JSON types
    record(12, prediction=[math.nan, math.inf, 1e-7, 2**70], scores=[0.0, -0.0]),
    record(
        13,
        model="m" * 100,
        version="v" * 100,
        role="r" * 40,
        error_class="e" * 50,
        request_id="é" * 200,
    ),
    record(14, sample_weight=4.0, ts=True, latency_ms=3, status=True, canary_weight_bp=False),
    record(15, slices={"device": None, "n": 3, "s": "日本"}, input="\x7f and \u2028 \\N"),
    # JSON's "\ud800" escape reads as a lone surrogate, which no store takes as UTF-8
    record(16, prediction={"p": "\ud800 é"}, slices={"s": "\udfff"}, scores=["\udbff"]),
]


def test_odd_values_encode_as_json_text_cut_to_their_columns() -> None:
    rows = {r.request_id[:3]: encode_row(r) for r in ODD}
    column = {name: i for i, name in enumerate(COLUMNS)}
    none, types, floats = rows["r10"], rows["r11"], rows["r12"]
    assert none[column["prediction"]] is None and none[column["scores"]] is None
    assert none[column["slices"]] == "{}"
    assert types[column["prediction"]] == '{"when":"2024-05-01","ids":"{7}"}'  # default=str
    assert floats[column["prediction"]] == "[NaN,Infinity,1e-07,1180591620717411303424]"
    assert floats[column["scores"]] == "[0.0,-0.0]"
    cut = rows["ééé"]
    assert cut[column["request_id"]] == "é" * 128
    widths = [len(cut[column[c]]) for c in ("model", "version", "role", "error_class")]
    assert widths == [64, 64, 16, 32]
    weighted, plain = rows["r14"], rows["r0"]
    assert weighted[column["sample_weight"]] == 4.0 and plain[column["sample_weight"]] is None
    numbers = [weighted[column[c]] for c in ("ts", "latency_ms", "status", "canary_weight_bp")]
    assert numbers == [1.0, 3.0, 1, 0]
    assert [type(n) for n in numbers] == [float, float, int, int]
    assert rows["r15"][column["slices"]] == '{"device":null,"n":3,"s":"日本"}'
    lone = rows["r16"]  # escaped, the same values
    assert lone[column["prediction"]] == '{"p":"\\ud800 \\u00e9"}'
    assert json.loads(lone[column["prediction"]]) == ODD[-1].prediction
    assert json.loads(lone[column["slices"]]) == {"s": "\udfff"}
    for r in ODD:  # the dict form is the same row by name
        assert encode_record(r) == dict(zip(COLUMNS, encode_row(r), strict=True))


def test_the_fast_write_reads_back_as_the_core_insert_wrote_it(store_engine: Engine) -> None:
    def rows() -> list[tuple[object, ...]]:
        return [tuple(r)[1:] for r in read_since(store_engine)]  # all but the id

    assert write_batch(store_engine, ODD) == len(ODD)
    written = rows()
    with store_engine.begin() as conn:
        conn.execute(predictions.delete())
        conn.execute(insert(predictions), [encode_record(r) for r in ODD])
    expected = rows()
    assert len(written) == len(ODD)
    for got, want in zip(written, expected, strict=True):
        assert got == want
