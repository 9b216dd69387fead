"""Text that str.isdigit() calls digits but int() refuses ('²', '³', '①'): every parser that
checked isdigit() before int() raised ValueError on it — a 500 for a V2 request with
`Inference-Header-Content-Length: ²`, an evaluation crash for a label '²' (found by the
json_path fuzz test). Each must treat it as not a number."""

from __future__ import annotations

import math

import pytest

from coalmine.analysis.inputs import _class_of
from coalmine.analysis.metrics import drift_order
from coalmine.analysis.outputs import _label_index
from coalmine.binary_tensors import BinaryTensorError, header_length
from coalmine.log.policy import json_path
from coalmine.registry.uri import RegistryError, parse_model_uri

NOT_ASCII_DIGITS = ["²", "³", "①", "1²"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_none_of_them_is_read_as_a_number(text: str) -> None:
    assert text.isdigit() and not text.isascii()  # the trap itself
    assert json_path([[1]], text) is None
    assert json_path({"a": [1]}, f"a.{text}") is None
    with pytest.raises(BinaryTensorError, match="non-negative integer"):
        header_length(text)
    assert _label_index(text, None) is None
    assert _label_index(f"-{text}", None) is None
    assert drift_order(f"+{text}") == (math.inf, f"+{text}")
    with pytest.raises(ValueError, match="is not an error class"):
        _class_of(f"http_{text}", "errors")
    with pytest.raises(RegistryError, match="not a version number"):
        parse_model_uri(f"models:/m/{text}")


def test_ascii_digits_still_are() -> None:
    assert json_path([[1, 2]], "0.1") == 2
    assert header_length("12") == 12
    assert _label_index("-3", None) == -3
    assert parse_model_uri("models:/m/3").version == "3"
