"""The registry refuses unknown and duplicate names: never a silent fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalmine.config import ConfigError, ModelConfig, parse_config
from coalmine.providers import build, names, register
from coalmine.providers.builtin import BuiltinProvider
from coalmine.store.engine import open_engine


def _model(traffic: dict[str, object] | None = None) -> ModelConfig:
    entry: dict[str, object] = {
        "name": "iris",
        "versions": [{"name": "v1", "url": "http://127.0.0.1:9001"}],
    }
    if traffic is not None:
        entry["traffic"] = traffic
    return parse_config({"models": [entry]}).models[0]


def test_builtin_is_the_default(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(build(_model(), engine), BuiltinProvider)
    assert "builtin" in names()


def test_a_name_registered_twice_is_refused() -> None:
    names()  # the built-in providers are registered
    with pytest.raises(ValueError, match="'builtin' is already registered"):
        register("builtin", lambda model, engine: BuiltinProvider(model.name, None))  # type: ignore[arg-type]


def test_an_unknown_provider_in_the_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        _model({"provider": "nginxx"})
    assert "traffic" in str(err.value)


def test_an_unknown_name_reaching_the_registry_raises(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    model = _model()
    odd = model.model_copy(
        update={"traffic": model.traffic.model_copy(update={"provider": "envoy"})}
    )
    with pytest.raises(
        ValueError, match=r"models\[iris\].traffic.provider: unknown provider 'envoy'"
    ):
        build(odd, engine)


def test_nginx_is_chosen_per_model_in_the_config(tmp_path: Path) -> None:
    from coalmine.providers.nginx import NginxProvider

    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    model = _model(
        {
            "provider": "nginx",
            "config_path": str(tmp_path / "iris.conf"),
            "main_config": "/etc/nginx/nginx.conf",
            "pid_file": "/run/nginx.pid",
        }
    )
    built = build(model, engine)
    assert isinstance(built, NginxProvider) and built.key == "$http_x_user_id"
    with pytest.raises(ConfigError, match="pid_file"):
        _model({"provider": "nginx", "config_path": "a", "main_config": "b"})


def test_a_json_sticky_key_under_nginx_is_a_config_error() -> None:
    entry = {
        "name": "iris",
        "versions": [{"name": "v1", "url": "http://127.0.0.1:9001"}],
        "routing": {"stable": "v1", "sticky": {"json_field": "user"}},
        "traffic": {"provider": "nginx", "config_path": "a", "main_config": "b", "pid_file": "c"},
    }
    with pytest.raises(ConfigError, match=r"routing\.sticky\.json_field: nginx"):
        parse_config({"models": [entry]})
