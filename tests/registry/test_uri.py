"""Registry URIs and candidate names (pure), and the registry of registries by name."""

from __future__ import annotations

import re
import sys

import pytest

from coalmine.config import NAME_PATTERN
from coalmine.registry import (
    ModelURI,
    RegistryError,
    candidate_name,
    make_registry,
    parse_model_uri,
    register_registry,
    registry_from_env,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/iris/3", ModelURI("iris", version="3")),
        ("models:/iris/03", ModelURI("iris", version="3")),
        ("models:/iris@champion", ModelURI("iris", alias="champion")),
        ("models:/team/iris@challenger-2", ModelURI("team/iris", alias="challenger-2")),
        ("models:/iris/latest", ModelURI("iris", latest=True)),
        ("models:/my model/7/", ModelURI("my model", version="7")),
    ],
)
def test_parses_versions_aliases_and_latest(uri: str, expected: ModelURI) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("runs:/abc/model", "expected models:/NAME/VERSION"),
        ("models:/iris", "expected models:/NAME/VERSION"),
        ("models:/iris/Production", "'Production' is not a version number"),
        ("models:/iris/0", "'0' is not a version number"),
        ("models:/@champion", "name is empty"),
        ("models:/iris@bad alias", "is not a valid alias"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri: str, reason: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_model_uri(uri)
    assert err.value.subject == uri and reason in err.value.reason


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("iris", "3", "iris-3"),
        ("team/fraud model", "12", "team-fraud-model-12"),
        ("__", "1", "model-1"),
        ("x" * 100, "12345", "x" * 57 + "-12345"),
    ],
)
def test_candidate_names_are_valid_coalmine_version_names(
    name: str, version: str, expected: str
) -> None:
    got = candidate_name(name, version)
    assert got == expected
    assert re.match(NAME_PATTERN, got)


def test_registry_names_reject_unknown_and_duplicates() -> None:
    with pytest.raises(ValueError, match="unknown model registry 'nope'; known: mlflow"):
        make_registry("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_registry("mlflow", make_registry)
    assert registry_from_env({}) is None
    with pytest.raises(ValueError, match="unknown model registry 'nope'"):
        registry_from_env({"COALMINE_REGISTRY": "nope"})


def test_a_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import mlflow` fail as if the extra were not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(RegistryError, match=r"pip install 'coalmine\[mlflow\]'"):
        make_registry("mlflow", tracking_uri="sqlite:///unused.db")
