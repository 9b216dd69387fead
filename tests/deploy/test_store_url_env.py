"""The store URL may come from the environment, so a deployment keeps the database password
in a secret (a Kubernetes Secret, say) rather than in the config file."""

from __future__ import annotations

import pytest

from coalmine.config import CoalmineConfig

MODELS = [{"name": "iris", "versions": [{"name": "v1", "url": "http://127.0.0.1:9001"}]}]
URL = "postgresql+psycopg://coalmine:s3cret@db.internal:5432/coalmine"


def test_a_file_without_a_store_url_takes_it_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COALMINE_STORE_URL", URL)
    config = CoalmineConfig.model_validate({"models": MODELS})
    assert config.store.url == URL
    assert "s3cret" not in config.summary()  # the password is never printed
    assert CoalmineConfig.model_validate({"models": MODELS, "store": {}}).store.url == URL


def test_the_file_wins_and_sqlite_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COALMINE_STORE_URL", URL)
    given = {"models": MODELS, "store": {"url": "sqlite:///other.db"}}
    assert CoalmineConfig.model_validate(given).store.url == "sqlite:///other.db"
    monkeypatch.delenv("COALMINE_STORE_URL")
    assert CoalmineConfig.model_validate({"models": MODELS}).store.url == "sqlite:///coalmine.db"
    monkeypatch.setenv("COALMINE_STORE_URL", "")  # set but empty: as unset
    assert CoalmineConfig.model_validate({"models": MODELS}).store.url == "sqlite:///coalmine.db"


def test_a_malformed_url_from_the_environment_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("COALMINE_STORE_URL", "not a url")
    with pytest.raises(ValidationError, match="url"):
        CoalmineConfig.model_validate({"models": MODELS})
