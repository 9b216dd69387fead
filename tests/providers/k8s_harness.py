"""The three Kubernetes providers, configured from a real config file's `traffic:` entries,
talking to the loopback API server of `k8s_api` through the official client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from coalmine.config import ModelConfig, parse_config
from coalmine.providers.gateway_api import GatewayApiProvider
from coalmine.providers.istio import IstioProvider
from coalmine.providers.k8s import KubernetesApi, KubernetesProvider
from coalmine.providers.kserve import KServeProvider
from tests.providers.k8s_api import ApiServerDouble, api_server, client_for
from tests.providers.k8s_crds import crd_schema, crds_available, schema_errors, with_defaults

VERSIONS = ["v1", "v2", "v3"]

TRAFFIC: dict[str, dict[str, Any]] = {
    "gateway-api": {
        "provider": "gateway-api",
        "namespace": "ml",
        "route": "iris",
        "parent_refs": [{"name": "public", "namespace": "infra", "section_name": "https"}],
        "hostnames": ["iris.example.com"],
        "path_prefix": "/v2/models/iris",
        "backends": {v: {"service": f"iris-{v}", "port": 8080} for v in VERSIONS},
        "tester_header": {"name": "X-Coalmine-Tester", "value": "yes"},
    },
    "istio": {
        "provider": "istio",
        "namespace": "ml",
        "virtual_service": "iris",
        "hosts": ["iris.ml.svc.cluster.local"],
        "destinations": {v: {"service": "iris", "subset": v, "port": 8080} for v in VERSIONS},
        "tester_header": {"name": "x-coalmine-tester", "value": "yes"},
    },
    "kserve": {
        "provider": "kserve",
        "namespace": "ml",
        "inference_service": "iris",
        "model_format": "sklearn",
        "storage_uris": {v: f"gs://models/iris/{v}" for v in VERSIONS},
    },
}

CLASSES: dict[str, type[KubernetesProvider]] = {
    "gateway-api": GatewayApiProvider,
    "istio": IstioProvider,
    "kserve": KServeProvider,
}


def model_config(provider: str, **changes: Any) -> ModelConfig:
    entry = {
        "name": "iris",
        "versions": [
            {"name": v, "url": f"http://127.0.0.1:900{i}"} for i, v in enumerate(VERSIONS, 1)
        ],
        "routing": {"stable": "v1", "salt": "s"},
        "traffic": {**TRAFFIC[provider], **changes},
    }
    return parse_config({"models": [entry]}).models[0]


def schema_double(**kwargs: Any) -> ApiServerDouble:
    """A server that validates and defaults objects with their published CRD schemas (when
    ../shared/k8s-crds is there; without them it stores what it is sent)."""
    if not crds_available():
        return ApiServerDouble(**kwargs)

    def defaults(obj: dict[str, Any]) -> dict[str, Any]:
        version = obj["apiVersion"].split("/")[-1]
        return dict(with_defaults(crd_schema(obj["kind"], version), obj))

    return ApiServerDouble(validate=schema_errors, defaults=defaults, **kwargs)


def kserve_ready_instantly(obj: dict[str, Any]) -> None:
    """KServe's controller in a cluster where every revision is ready at once."""
    generation = obj["metadata"]["generation"]
    revision = f"iris-predictor-{generation:05d}"
    obj["status"] = {
        "observedGeneration": generation,
        "components": {
            "predictor": {"latestCreatedRevision": revision, "latestReadyRevision": revision}
        },
    }


@contextmanager
def k8s_provider(
    provider: str, double: ApiServerDouble | None = None, **changes: Any
) -> Iterator[tuple[KubernetesProvider, ApiServerDouble]]:
    double = double or schema_double(
        controller=kserve_ready_instantly if provider == "kserve" else None
    )
    model = model_config(provider, **changes)
    with api_server(double) as url:
        api = KubernetesApi(lambda: client_for(url))
        yield CLASSES[provider](model.name, model.traffic, api), double  # type: ignore[arg-type]


__all__ = ["CLASSES", "TRAFFIC", "k8s_provider", "model_config", "schema_double", "schema_errors"]
