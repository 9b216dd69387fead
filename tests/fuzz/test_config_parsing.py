"""Property tests of config parsing: a valid document loads; anything else is a ConfigError
naming a field and a reason, never another exception (a traceback is not an error message).

Three sources of documents: valid configurations built from the models' own rules (they
load, and dump-then-load gives the same config); valid ones with one part replaced by a
random value, dropped, or joined by an unknown key (a ConfigError about that part, or a
config if the value happens to be valid); and random YAML-ish text read from a file.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalmine.config import ConfigError, load_config, parse_config
from tests.fuzz.counts import COUNTS

SETTINGS = settings(
    max_examples=80, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip

NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,12}\Z")
PORT = st.integers(min_value=0, max_value=65535)
HOST = st.sampled_from(["127.0.0.1", "localhost", "model-a.internal", "10.0.0.7"])
BASIS_POINTS = st.integers(min_value=0, max_value=10_000).map(lambda bp: bp / 100)


@st.composite
def models(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for name in draw(st.lists(NAME, min_size=1, max_size=3, unique=True)):
        versions = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
        urls = [f"http://{draw(HOST)}:{draw(st.integers(1, 65535))}" for _ in versions]
        routing: dict[str, Any] = {"stable": versions[0]}
        if len(versions) > 1 and draw(st.booleans()):
            routing["canary"] = versions[1]
            routing["canary_weight"] = draw(BASIS_POINTS)
        if len(versions) > 2 and draw(st.booleans()):
            routing["shadow"] = versions[2]
            routing["mirror_share"] = draw(BASIS_POINTS)
        sticky = draw(st.sampled_from([None, {"header": "X-User-Id"}, {"cookie": "uid"},
                                       {"json_field": "instances.0.user_id"}]))  # fmt: skip
        if sticky is not None:
            routing["sticky"] = sticky
        out.append(
            {
                "name": name,
                "task": draw(st.sampled_from(["classification", "regression"])),
                "versions": [{"name": v, "url": u} for v, u in zip(versions, urls, strict=True)],
                "routing": routing,
            }
        )
    return out


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"models": draw(models())}
    if draw(st.booleans()):
        doc["gateway"] = {
            "port": draw(PORT),
            "max_body_bytes": draw(st.integers(1, 1 << 24)),
            "upstream_timeout_s": draw(st.floats(0.01, 60)),
            "fast_guard_failures": draw(st.integers(0, 50)),
        }
    if draw(st.booleans()):
        doc["logging"] = {
            "inputs": draw(st.sampled_from(["full", "redacted", "hashed", "none"])),
            "batch_size": draw(st.integers(1, 5000)),
        }
    if draw(st.booleans()):
        doc["api"] = {"port": draw(PORT), "max_body_bytes": draw(st.integers(1, 1 << 24))}
    if draw(st.booleans()):
        doc["user_metrics"] = {draw(NAME): "mypkg.metrics:top1"}
    return doc


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a part of a document (mapping keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _drop(doc: Any, path: tuple[Any, ...]) -> None:
    for part in path[:-1]:
        doc = doc[part]
    del doc[path[-1]]


def _assert_names_fields(exc: ConfigError) -> None:
    assert exc.errors, exc
    for path, reason in exc.errors:
        assert isinstance(path, str) and path, exc
        assert isinstance(reason, str) and reason.strip(), exc


@SETTINGS
@given(valid_configs())
def test_a_valid_configuration_loads_and_round_trips(doc: dict[str, Any]) -> None:
    COUNTS["config documents (hypothesis)"] += 1
    config = parse_config(doc)
    assert [m.name for m in config.models] == [m["name"] for m in doc["models"]]
    assert parse_config(config.model_dump(mode="json")) == config


@SETTINGS
@given(valid_configs(), st.data())
def test_a_broken_configuration_is_a_config_error_about_the_broken_part(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    COUNTS["config documents (hypothesis)"] += 1
    path = data.draw(st.sampled_from(_paths(doc)))
    how = data.draw(st.sampled_from(["replace", "drop", "unknown key"]))
    if how == "replace":
        _set(doc, path, data.draw(JSONISH))
    elif how == "drop":
        _drop(doc, path)
    else:
        parent = path[:-1]
        target = doc
        for part in parent:
            target = target[part]
        if not isinstance(target, dict):
            return
        target["no_such_setting"] = 1
        path = (*parent, "no_such_setting")
    try:
        parse_config(doc)
    except ConfigError as exc:
        _assert_names_fields(exc)
        # the error is about the part that was broken, or about what contains it
        top = str(path[0])
        assert any(p.split(".")[0] in (top, "(top level)") for p, _ in exc.errors), (
            path, exc.errors)  # fmt: skip


@SETTINGS
@given(
    st.one_of(
        st.text(alphabet=string.printable, max_size=200),
        JSONISH.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
        valid_configs().map(lambda d: yaml.safe_dump(d, sort_keys=False)),
        # nesting past the parser's stack (fixed depths: nothing to shrink)
        st.sampled_from([10, 200, 3000]).map(lambda n: "a: " + "[" * n + "]" * n),
        st.sampled_from([10, 200, 3000]).map(lambda n: "models: " + "{b: " * n + "1" + "}" * n),
    )
)
def test_any_text_in_a_config_file_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    COUNTS["config documents (hypothesis)"] += 1
    path = tmp_path / "coalmine.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        _assert_names_fields(exc)
