"""The controller's hook (TrafficSync) drives a Kubernetes provider built from the config:
the real client against the loopback API server of k8s_api.py (no Kubernetes API server can
run here; it answers as the API documents server-side apply)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine.config import parse_config
from coalmine.providers import build
from coalmine.providers.base import ProviderError
from coalmine.providers.sync import TrafficSync
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.providers.k8s_api import api_server
from tests.providers.k8s_harness import TRAFFIC, schema_double

PATH = "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/iris"


def _config(tmp_path: Path, url: str, **routing: Any) -> Any:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [{"name": "lab", "cluster": {"server": url}}],
                "users": [{"name": "bot", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "bot"}}],
            }
        )
    )
    return parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "models": [
                {
                    "name": "iris",
                    "versions": [
                        {"name": v, "url": f"http://127.0.0.1:900{i}"}
                        for i, v in enumerate(["v1", "v2", "v3"], 1)
                    ],
                    "routing": {"stable": "v1", **routing},
                    "traffic": {**TRAFFIC["istio"], "kubeconfig": str(kubeconfig)},
                }
            ],
        }
    )


def _weights(obj: dict[str, Any]) -> list[tuple[str, int]]:
    route = obj["spec"]["http"][-1]["route"]
    return [(r["destination"]["subset"], r["weight"]) for r in route]


def test_the_controllers_sync_applies_route_changes_and_survives_a_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    double = schema_double()
    with api_server(double) as url:
        config = _config(tmp_path, url)
        engine = open_engine(config.store.url)
        routes = RouteRepository(engine)
        routes.seed_from_config(config)
        now = [0.0]
        sync = TrafficSync.from_config(config, engine)
        sync.clock = lambda: now[0]
        assert double.requests == []  # building the providers reaches no cluster

        asyncio.run(sync.sync())
        assert _weights(double.objects[PATH]) == [("v1", 100)]
        routes.set_route("iris", canary="v2", canary_weight_bp=500)
        asyncio.run(sync.sync())
        assert _weights(double.objects[PATH]) == [("v1", 95), ("v2", 5)]
        patches = double.patches()
        asyncio.run(sync.sync())
        assert double.patches() == patches  # in sync: one GET, no PATCH

        # the API server refuses the next object: logged, the cluster keeps the last one
        double.validate = lambda obj: ["spec.http[1].route[0].weight: Invalid value"]
        routes.set_route("iris", canary_weight_bp=2_000)
        with caplog.at_level(logging.WARNING, "coalmine.providers.sync"):
            asyncio.run(sync.sync())
        assert "422" in caplog.text and "t0ken" not in caplog.text
        assert _weights(double.objects[PATH]) == [("v1", 95), ("v2", 5)]
        double.validate = None
        now[0] = 10.0  # after the pause
        asyncio.run(sync.sync())
        assert _weights(double.objects[PATH]) == [("v1", 80), ("v2", 20)]
        engine.dispose()


def test_a_version_without_a_service_is_refused_before_any_call(tmp_path: Path) -> None:
    """A version the config does not map (e.g. one registered later) never turns its URL
    into a destination: the render names the field, and nothing is sent."""
    double = schema_double()
    with api_server(double) as url:
        config = _config(tmp_path, url)
        engine = open_engine(config.store.url)
        provider = build(config.models[0], engine)
        route = RouteRepository(engine)
        route.seed_from_config(config)
        state = route.get("iris")
        assert state is not None
        odd = dataclasses.replace(
            state, canary="v9", canary_weight_bp=500, urls={**state.urls, "v9": "http://evil:1"}
        )
        with pytest.raises(ProviderError, match=r"traffic\.destinations: version 'v9'"):
            provider.sync(odd)
        engine.dispose()
    assert double.requests == []


def test_a_sticky_key_is_reported_as_not_honoured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, "http://127.0.0.1:1", sticky={"header": "X-User-Id"})
    engine = open_engine(config.store.url)
    with caplog.at_level(logging.WARNING, "coalmine.providers.k8s"):
        build(config.models[0], engine)
    engine.dispose()
    assert "routing.sticky is not honoured by traffic.provider istio" in caplog.text
