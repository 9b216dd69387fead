"""Rendering of the Kubernetes providers (pure): literal objects, and every object a rollout
walks through valid against its project's published CRD schema (Gateway API v1.6.1 standard,
Istio 1.30.3, KServe v0.20.0: ../shared/k8s-crds, see SOURCES.md there)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from coalmine.config import ConfigError
from coalmine.providers.base import ProviderError
from coalmine.providers.k8s import KubernetesApi
from coalmine.providers.k8s_objects import (
    diff_manifests,
    owned_fields,
    relative_weights,
    whole_percent,
)
from coalmine.routing.state import RouteState
from tests.providers.k8s_crds import require_crds
from tests.providers.k8s_harness import CLASSES, model_config, schema_errors
from tests.providers.test_contract import URLS, ladder

BASE = RouteState(model="iris", stable="v1", salt="s", urls=URLS)


def provider(name: str, **changes: Any) -> Any:
    model = model_config(name, **changes)

    def no_cluster() -> Any:
        raise AssertionError("rendering must not reach a cluster")

    return CLASSES[name](model.name, model.traffic, KubernetesApi(no_cluster))


def routes() -> list[RouteState]:
    step = dataclasses.replace
    return [
        BASE,
        *ladder(BASE),
        step(BASE, canary="v2", canary_weight_bp=1, shadow="v3", mirror_bp=1, rollout_id=1),
        step(BASE, canary="v2", canary_weight_bp=9_999, shadow="v3", mirror_bp=9_999),
    ]


def test_weights_keep_whole_percents_and_stay_exact_below() -> None:
    assert relative_weights([9_500, 500]) == [95, 5]
    assert relative_weights([7_450, 2_550]) == [149, 51]
    assert relative_weights([9_999, 1]) == [9_999, 1]
    assert relative_weights([0, 10_000]) == [0, 100]
    assert relative_weights([9_000, 500, 500]) == [90, 5, 5]
    assert [whole_percent(bp) for bp in (0, 1, 149, 150, 2_550, 9_949, 9_999, 10_000)] == [
        0,
        1,
        1,
        2,
        26,
        99,
        99,
        100,
    ]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_rendered_object_is_valid_against_its_published_schema(name: str) -> None:
    require_crds()
    p = provider(name)
    for route in routes():
        manifest = p.render(route)
        assert schema_errors(manifest) == [], route


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_schema_check_refuses_what_the_api_server_would(name: str) -> None:
    """The validator is not vacuous: a misspelled field and a wrong type are caught."""
    require_crds()
    manifest = provider(name).render(ladder(BASE)[2])
    manifest["spec"]["weightz"] = 1
    assert any("weightz" in e for e in schema_errors(manifest))
    manifest = provider(name).render(ladder(BASE)[2])
    if name == "gateway-api":
        manifest["spec"]["rules"][-1]["backendRefs"][0]["weight"] = -1
    elif name == "istio":
        manifest["spec"]["http"][-1]["route"][0]["weight"] = "ninety"
    else:
        manifest["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert schema_errors(manifest) != []


def test_gateway_api_canary_mirror_and_testers() -> None:
    p = provider("gateway-api")
    route = dataclasses.replace(
        BASE, canary="v2", canary_weight_bp=2_550, shadow="v3", mirror_bp=1_000
    )
    spec = p.render(route)["spec"]
    assert spec["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "infra",
            "sectionName": "https",
        }
    ]
    testers, split = spec["rules"]
    path = {"type": "PathPrefix", "value": "/v2/models/iris"}
    assert testers["matches"] == [
        {"path": path, "headers": [{"type": "Exact", "name": "X-Coalmine-Tester", "value": "yes"}]}
    ]
    assert [b["name"] for b in testers["backendRefs"]] == ["iris-v2"]  # the candidate
    assert split["matches"] == [{"path": path}]
    assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == [
        ("iris-v1", 149),
        ("iris-v2", 51),
    ]
    assert split["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "iris-v3", "port": 8080},
                "percent": 10,
            },
        }
    ]
    # a share finer than a percent is a fraction, exact
    fine = p.render(dataclasses.replace(route, mirror_bp=250))["spec"]["rules"][1]["filters"]
    assert fine[0]["requestMirror"]["fraction"] == {"numerator": 1, "denominator": 40}
    # testers reach the shadow while there is no canary; no candidate, no testers' rule
    shadow_only = p.render(dataclasses.replace(BASE, shadow="v3", mirror_bp=10_000))
    assert shadow_only["spec"]["rules"][0]["backendRefs"][0]["name"] == "iris-v3"
    stable = p.render(BASE)["spec"]["rules"]
    assert [r["name"] for r in stable] == ["coalmine-split"]
    assert stable[0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "iris-v1", "port": 8080, "weight": 100}
    ]
    assert "filters" not in stable[0]


def test_istio_weights_mirror_and_mirror_percentage() -> None:
    p = provider("istio")
    route = dataclasses.replace(
        BASE, canary="v2", canary_weight_bp=500, shadow="v3", mirror_bp=1_234
    )
    manifest = p.render(route)
    assert manifest["apiVersion"] == "networking.istio.io/v1"
    testers, split = manifest["spec"]["http"]
    assert testers["match"][0]["headers"] == {"x-coalmine-tester": {"exact": "yes"}}
    assert split["route"] == [
        {"destination": {"host": "iris", "port": {"number": 8080}, "subset": "v1"}, "weight": 95},
        {"destination": {"host": "iris", "port": {"number": 8080}, "subset": "v2"}, "weight": 5},
    ]
    assert split["mirror"] == {"host": "iris", "port": {"number": 8080}, "subset": "v3"}
    assert split["mirrorPercentage"] == {"value": 12.34}
    other_ns = provider(
        "istio",
        destinations={
            v: {"service": f"iris-{v}", "namespace": "models", "port": 80}
            for v in ("v1", "v2", "v3")
        },
    ).render(BASE)
    assert other_ns["spec"]["http"][0]["route"][0]["destination"] == {
        "host": "iris-v1.models.svc.cluster.local",
        "port": {"number": 80},
    }


def test_kserve_canary_percent_and_no_mirror() -> None:
    p = provider("kserve", runtime="kserve-sklearnserver")
    stable = p.render(BASE)
    assert stable["spec"] == {
        "predictor": {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "gs://models/iris/v1",
                "runtime": "kserve-sklearnserver",
            }
        }
    }
    canary = p.render(dataclasses.replace(BASE, canary="v2", canary_weight_bp=2_550))
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 26
    assert canary["spec"]["predictor"]["model"]["storageUri"] == "gs://models/iris/v2"
    tiny = p.render(dataclasses.replace(BASE, canary="v2", canary_weight_bp=10))
    assert tiny["spec"]["predictor"]["canaryTrafficPercent"] == 1  # never rounded to 0
    # KServe cannot mirror: a shadow renders as the stable alone
    assert p.render(dataclasses.replace(BASE, shadow="v3", mirror_bp=10_000)) == stable


def test_a_baseline_share_needs_a_baseline_service() -> None:
    route = dataclasses.replace(
        BASE, canary="v2", canary_weight_bp=500, baseline_url="http://b:1", baseline_bp=500
    )
    with pytest.raises(ProviderError, match=r"traffic\.baseline"):
        provider("gateway-api").render(route)
    p = provider("gateway-api", baseline={"service": "iris-baseline", "port": 8080})
    weights = [(b["name"], b["weight"]) for b in p.render(route)["spec"]["rules"][1]["backendRefs"]]
    assert weights == [("iris-v1", 90), ("iris-v2", 5), ("iris-baseline", 5)]


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        ("gateway-api", {"namespace": "ML"}, "namespace"),
        ("gateway-api", {"route": "iris_route"}, "route"),
        ("gateway-api", {"backends": {"v1": {"service": "a", "port": 0}}}, "port"),
        ("gateway-api", {"parent_refs": []}, "parent_refs"),
        ("gateway-api", {"tester_header": {"name": "X Tester", "value": "1"}}, "name"),
        ("gateway-api", {"hostnames": ["https://iris.example.com"]}, "hostnames"),
        ("gateway-api", {"path_prefix": "v2/models"}, "path_prefix"),
        ("gateway-api", {"path_prefix": "/v2//models"}, "path_prefix"),
        ("gateway-api", {"path_prefix": "/v2/../admin"}, "path_prefix"),
        ("gateway-api", {"path_prefix": "/v2/%2Fx"}, "path_prefix"),
        ("gateway-api", {"path_prefix": "/v2 models"}, "path_prefix"),
        ("gateway-api", {"parent_refs": [{"name": "gw"}, {"name": "gw"}]}, "section_name"),
        ("istio", {"tester_header": {"name": "X-Tester", "value": "1"}}, "tester_header"),
        ("istio", {"hosts": []}, "hosts"),
        ("kserve", {"storage_uris": {"v1": "models/iris"}}, "storage_uris"),
        ("kserve", {"inference_service": "Iris"}, "inference_service"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_field(
    name: str, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        model_config(name, **changes)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("name", "field"),
    [("gateway-api", "backends"), ("istio", "destinations"), ("kserve", "storage_uris")],
)
def test_every_version_needs_a_target_and_no_target_names_an_unknown_version(
    name: str, field: str
) -> None:
    from tests.providers.k8s_harness import TRAFFIC

    targets = dict(TRAFFIC[name][field])
    del targets["v2"]
    with pytest.raises(ConfigError, match=rf"traffic\.{field}: no entry for version\(s\) \['v2'\]"):
        model_config(name, **{field: targets})
    targets = {**TRAFFIC[name][field], "v9": TRAFFIC[name][field]["v1"]}
    with pytest.raises(ConfigError, match=rf"traffic\.{field}: \['v9'\] are not versions"):
        model_config(name, **{field: targets})


def test_owned_fields_and_diff() -> None:
    live = {
        "spec": {
            "a": 1,
            "b": {"c": 2, "d": 3},
            "items": [{"name": "x", "v": 1, "w": 9}, {"name": "y", "v": 2}],
            "set": ["p", "q"],
        },
        "status": {"ready": True},
    }
    fields = {
        "f:spec": {
            "f:a": {},
            "f:b": {"f:c": {}},
            "f:items": {'k:{"name":"x"}': {".": {}, "f:v": {}}},
            "f:set": {'v:"q"': {}},
        }
    }
    assert owned_fields(live, fields) == {
        "spec": {"a": 1, "b": {"c": 2}, "items": [{"v": 1}], "set": ["q"]}
    }
    assert diff_manifests({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}) == []
    assert diff_manifests({"a": {"x": 1}}, {"a": {"x": 2, "y": 3}}) == [
        "a.x: 2 -> 1",
        "a.y: 3 -> absent",
    ]
