"""`coalmine routes diff|apply --traffic` with a Kubernetes provider: the real CLI, the real
client, the loopback API server of k8s_api.py (no Kubernetes API server can run here; it
answers as the API documents server-side apply)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from coalmine.cli import app
from coalmine.config import load_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.providers.k8s_api import api_server
from tests.providers.k8s_harness import TRAFFIC, schema_double

PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/iris"


def _files(tmp_path: Path, url: str, weight: float) -> Path:
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
    config = tmp_path / "coalmine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
                "models": [
                    {
                        "name": "iris",
                        "versions": [
                            {"name": v, "url": f"http://127.0.0.1:900{i}"}
                            for i, v in enumerate(["v1", "v2", "v3"], 1)
                        ],
                        "routing": {"stable": "v1", "canary": "v2", "canary_weight": weight},
                        "traffic": {**TRAFFIC["gateway-api"], "kubeconfig": str(kubeconfig)},
                    }
                ],
            }
        )
    )
    return config


def test_routes_diff_and_apply_reach_the_traffic_layer(tmp_path: Path) -> None:
    runner = CliRunner()
    double = schema_double()
    with api_server(double) as url:
        config = _files(tmp_path, url, weight=10)
        engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
        RouteRepository(engine).seed_from_config(load_config(config))  # as serve's first start
        engine.dispose()
        applied = runner.invoke(app, ["routes", "apply", "iris", "--config", str(config)])
        assert applied.exit_code == 0, applied.output
        assert double.requests == []  # without --traffic, the store only

        shown = runner.invoke(app, ["routes", "diff", "--traffic", "--config", str(config)])
        assert shown.exit_code == 1, shown.output
        assert "iris: traffic layer gateway-api differs" in shown.output
        assert "HTTPRoute ml/iris: not created yet" in shown.output

        synced = runner.invoke(
            app, ["routes", "apply", "iris", "--traffic", "--config", str(config)]
        )
        assert synced.exit_code == 0, synced.output
        rules = double.objects[PATH]["spec"]["rules"]
        assert [b["weight"] for b in rules[-1]["backendRefs"]] == [90, 10]

        clean = runner.invoke(app, ["routes", "diff", "--traffic", "--config", str(config)])
        assert clean.exit_code == 0, clean.output
        assert "iris: traffic layer gateway-api holds the stored route" in clean.output

        rules[-1]["backendRefs"][1]["weight"] = 50  # a hand edit in the cluster
        drift = runner.invoke(app, ["routes", "diff", "--traffic", "--config", str(config)])
        assert drift.exit_code == 1
        assert "spec.rules[1].backendRefs[1].weight: 50 -> 10" in drift.output
    assert "t0ken" not in drift.output + synced.output
