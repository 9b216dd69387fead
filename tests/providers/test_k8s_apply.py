"""The apply path of the Kubernetes providers: the official `kubernetes` client against a real
loopback HTTP server.

No Kubernetes API server can run on this machine. The exchanges below are recorded from the
API's documented behaviour for server-side apply of custom resources (GET 404 `Status`,
PATCH `application/apply-patch+yaml` answered 201 on create and 200 on update, 409
`Conflict` naming the other field manager, 422 `Invalid` with its causes), replayed in order
to the real client; the tests assert what the client sent: method, path, query
(`fieldManager=coalmine`, `force`, `fieldValidation=Strict`), content type and body.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from coalmine.config import parse_config
from coalmine.providers import build
from coalmine.providers.base import ProviderError
from coalmine.providers.gateway_api import GatewayApiProvider
from coalmine.providers.k8s import KubernetesApi, load_client
from coalmine.providers.k8s_objects import owned_manifest
from coalmine.providers.kserve import KServeProvider
from coalmine.routing.state import RouteState
from coalmine.store.engine import open_engine
from tests.providers.k8s_api import ApiServerDouble, api_server, client_for, fields_v1, status
from tests.providers.k8s_crds import require_crds
from tests.providers.k8s_harness import TRAFFIC, k8s_provider, model_config, schema_double
from tests.providers.test_contract import URLS

BASE = RouteState(model="iris", stable="v1", salt="s", urls=URLS)
CANARY = dataclasses.replace(BASE, canary="v2", canary_weight_bp=1_000, rollout_id=1)
ROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/iris"


def stored(manifest: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """`manifest` as the API server stores and returns it after a `coalmine` apply."""
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {
        k: v for k, v in manifest["metadata"].items() if k not in ("name", "namespace")
    }
    meta = {
        **manifest["metadata"],
        "uid": "6f1c7a52-0c0e-4a59-9b0a-2f1d1c0e9a11",
        "resourceVersion": "4711",
        "generation": generation,
        "creationTimestamp": "2026-11-30T08:00:00Z",
        "managedFields": [
            {
                "manager": "coalmine",
                "operation": "Apply",
                "apiVersion": manifest["apiVersion"],
                "time": "2026-11-30T08:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(body),
            }
        ],
    }
    return {**manifest, "metadata": meta, "status": {"parents": []}}


def test_create_then_read_back_then_a_repeat_sends_nothing() -> None:
    with k8s_provider("gateway-api", ApiServerDouble(script=[])) as (p, api):
        desired = p.render(CANARY)
        api.script = [
            (404, status(404, "NotFound", 'httproutes.gateway.networking.k8s.io "iris" not found')),
            (201, stored(desired)),
            (200, stored(desired)),
            (200, stored(desired)),  # the next sync's read
        ]
        assert p.sync(CANARY) == ["HTTPRoute ml/iris: not created yet"]
        assert p.sync(CANARY) == []  # read, no difference, no PATCH
        assert api.script == []
    get, patch, read_back, again = api.requests
    assert (get.method, get.path) == ("GET", ROUTE_PATH)
    assert (patch.method, patch.path) == ("PATCH", ROUTE_PATH)
    assert patch.content_type == "application/apply-patch+yaml"
    assert patch.query == {"fieldManager": "coalmine", "fieldValidation": "Strict", "force": "true"}
    assert patch.body == desired
    assert [b["weight"] for b in patch.body["spec"]["rules"][1]["backendRefs"]] == [90, 10]
    assert (read_back.method, read_back.path) == ("GET", ROUTE_PATH)
    assert (again.method, again.path) == ("GET", ROUTE_PATH)


def test_an_update_sends_the_whole_desired_object_and_reads_it_back() -> None:
    with k8s_provider("gateway-api", ApiServerDouble(script=[])) as (p, api):
        before, after = p.render(BASE), p.render(CANARY)
        api.script = [(200, stored(before)), *[(200, stored(after, 2))] * 3]
        changes = p.sync(CANARY)
        assert p.read() is not None
    assert any("weight" in c or "backendRefs" in c for c in changes), changes
    assert [r.method for r in api.requests] == ["GET", "PATCH", "GET", "GET"]
    assert api.requests[1].body == after


def test_a_conflict_is_refused_with_the_other_manager_named_when_not_forcing() -> None:
    with k8s_provider("gateway-api", ApiServerDouble(script=[]), force_conflicts=False) as (
        p,
        api,
    ):
        api.script = [
            (404, status(404, "NotFound", 'httproutes "iris" not found')),
            (
                409,
                status(
                    409,
                    "Conflict",
                    'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                    "using gateway.networking.k8s.io/v1: .spec.rules",
                    causes=[{"reason": "FieldManagerConflict", "field": ".spec.rules"}],
                ),
            ),
        ]
        with pytest.raises(ProviderError) as err:
            p.sync(CANARY)
    message = str(err.value)
    assert "409" in message and "kubectl-client-side-apply" in message
    assert "force_conflicts" in message
    assert api.requests[1].query.get("force") in (None, "false")  # not forced
    assert len(api.requests) == 2  # nothing read back: nothing was applied


def test_an_invalid_object_is_refused_with_the_servers_reason() -> None:
    with k8s_provider("istio", ApiServerDouble(script=[])) as (p, api):
        api.script = [
            (404, status(404, "NotFound", 'virtualservices "iris" not found')),
            (
                422,
                status(
                    422,
                    "Invalid",
                    'VirtualService.networking.istio.io "iris" is invalid: spec.http[1].route'
                    "[0].weight: Invalid value: -5: weight must be non-negative",
                    causes=[{"reason": "FieldValueInvalid", "field": "spec.http[1].route[0]"}],
                ),
            ),
        ]
        with pytest.raises(ProviderError, match=r"422 .*weight must be non-negative"):
            p.sync(CANARY)
    patch = api.requests[1]
    assert patch.path == "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/iris"
    assert patch.content_type == "application/apply-patch+yaml"


def test_the_schema_checking_server_refuses_an_object_that_breaks_the_crd() -> None:
    require_crds()
    with k8s_provider("gateway-api", schema_double()) as (p, api):
        bad = p.render(CANARY)
        bad["spec"]["rules"][1]["backendRefs"][0]["weight"] = -1
        with pytest.raises(ProviderError, match="422"):
            p.apply(bad)
        assert api.objects == {}  # refused: nothing stored
        p.apply(p.render(CANARY))
        assert p.read() == p.render(CANARY)


def test_fields_another_manager_owns_stay_theirs_and_are_no_difference() -> None:
    """A team's own manifest owns the InferenceService's resources; Coalmine owns the model
    and the canary share: neither shows up in the other's picture, force or not."""
    require_crds()
    path = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/iris"
    theirs = {"spec": {"predictor": {"minReplicas": 2, "serviceAccountName": "models"}}}
    double = schema_double()
    double.others[path] = ("kubectl-client-side-apply", theirs)
    with k8s_provider("kserve", double, force_conflicts=False) as (p, api):
        assert p.sync(CANARY) != []
        live = api.objects[path]
        assert live["spec"]["predictor"]["minReplicas"] == 2
        assert live["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert p.read() == p.render(CANARY)
        assert p.sync(CANARY) == []


def test_a_forced_apply_takes_back_a_field_another_manager_changed() -> None:
    require_crds()
    path = "/apis/networking.istio.io/v1/namespaces/ml/virtualservices/iris"
    double = schema_double()
    with k8s_provider("istio", double) as (p, api):
        p.sync(CANARY)
        # someone edits the weights by hand
        edited = api.objects[path]["spec"]["http"]
        double.others[path] = ("kubectl-edit", {"spec": {"http": edited[:1]}})
        api.objects[path]["spec"]["http"] = edited[:1]
        assert p.diff(p.render(CANARY), owned_manifest(api.objects[path])) != []
        p.sync(CANARY)
        assert p.read() == p.render(CANARY)
        assert [r.query["force"] for r in api.requests if r.method == "PATCH"] == ["true"] * 2


def test_kserve_rollback_pins_traffic_until_the_stables_revision_is_ready() -> None:
    """Reverting the spec starts a new revision; until it is ready KServe's "latest ready
    revision" is the canary's, so the rollback first pins all traffic (canaryTrafficPercent
    0) to the last rolled-out revision and lifts the pin once the new revision is ready."""
    require_crds()
    ready = {"now": False}

    def kserve(obj: dict[str, Any]) -> None:
        generation = obj["metadata"]["generation"]
        created = f"iris-predictor-{generation:05d}"
        old = (obj.get("status") or {}).get("components", {}).get("predictor", {})
        obj["status"] = {
            "observedGeneration": generation,
            "components": {
                "predictor": {
                    "latestCreatedRevision": created,
                    "latestReadyRevision": created
                    if ready["now"]
                    else old.get("latestReadyRevision", created),
                }
            },
        }

    double = schema_double(controller=kserve)
    path = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/iris"
    with k8s_provider("kserve", double) as (p, api):
        ready["now"] = True
        p.sync(BASE)
        p.sync(CANARY)
        ready["now"] = False
        with pytest.raises(ProviderError, match="pinned"):
            p.sync(BASE)
        predictor = api.objects[path]["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 0
        assert predictor["model"]["storageUri"] == "gs://models/iris/v1"
        with pytest.raises(ProviderError, match="not ready"):
            p.sync(BASE)  # still starting: stays pinned
        assert api.objects[path]["spec"]["predictor"]["canaryTrafficPercent"] == 0
        # the new revision becomes ready (the controller reports it)
        obj = api.objects[path]
        components = obj["status"]["components"]["predictor"]
        components["latestReadyRevision"] = components["latestCreatedRevision"]
        assert p.sync(BASE) != []
        assert "canaryTrafficPercent" not in api.objects[path]["spec"]["predictor"]
        assert p.read() == p.render(BASE)
    # promotion (the canary's spec stays) is a single apply, no pin
    assert KServeProvider.rolling_back(p.render(BASE), p.render(CANARY))
    promoted = dataclasses.replace(BASE, stable="v2")
    assert not KServeProvider.rolling_back(p.render(promoted), p.render(CANARY))


def test_the_cluster_is_the_kubeconfigs_and_its_credentials_are_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server comes from the kubeconfig (nothing in the model's config or a route
    names a host); its bearer token is sent to that server and appears in no log line and
    no error message, even when the server refuses."""
    token = "s3cr3t-token-do-not-log"
    seen: list[str] = []
    double = ApiServerDouble(
        script=[(403, status(403, "Forbidden", "virtualservices is forbidden"))]
    )
    with api_server(double) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
            f"clusters: [{{name: lab, cluster: {{server: '{url}'}}}}]\n"
            f"users: [{{name: bot, user: {{token: {token}}}}}]\n"
            "contexts: [{name: lab, context: {cluster: lab, user: bot}}]\n"
        )
        model = model_config("istio", kubeconfig=str(kubeconfig), context="lab")
        engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
        provider = build(model, engine)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(ProviderError) as err:
            provider.read()
        engine.dispose()
        seen.extend(r.path for r in double.requests)
    assert seen == ["/apis/networking.istio.io/v1/namespaces/ml/virtualservices/iris"]
    assert double.authorizations == [f"Bearer {token}"]
    assert "403" in str(err.value) and "Role" in str(err.value)
    assert token not in str(err.value)
    assert token not in caplog.text


def test_an_unreachable_cluster_is_a_provider_error() -> None:
    """The sync's contract: a refusal is a ProviderError (logged, retried), whatever failed."""
    with api_server(ApiServerDouble(script=[])) as url:
        pass  # the port is closed again: nothing listens there now
    model = model_config("gateway-api")
    provider = GatewayApiProvider(model.name, model.traffic, KubernetesApi(lambda: client_for(url)))  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="GET HTTPRoute ml/iris"):
        provider.sync(CANARY)


def test_a_missing_kubeconfig_is_an_error_naming_the_field(tmp_path: Path) -> None:
    model = model_config("gateway-api", kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(ProviderError, match=r"traffic\.kubeconfig"):
        load_client(model.traffic)  # type: ignore[arg-type]


def test_the_providers_are_chosen_per_model_in_the_config(tmp_path: Path) -> None:
    entries = [
        {
            "name": f"m-{name}",
            "versions": [
                {"name": v, "url": f"http://127.0.0.1:900{i}"}
                for i, v in enumerate(["v1", "v2", "v3"], 1)
            ],
            "routing": {"stable": "v1"},
            "traffic": TRAFFIC[name],
        }
        for name in TRAFFIC
    ]
    config = parse_config({"models": entries, "store": {"url": f"sqlite:///{tmp_path}/s.db"}})
    engine = open_engine(config.store.url)
    built = {m.name: build(m, engine).name for m in config.models}
    engine.dispose()
    assert built == {f"m-{n}": n for n in TRAFFIC}


def test_an_object_the_server_changed_on_apply_is_reported_on_read_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mutating webhook (here: one that caps a canary at 5) leaves another object than the
    one applied: the read-back says so, and the next sync still sees the difference."""

    def webhook(obj: dict[str, Any]) -> dict[str, Any]:
        for destination in obj["spec"]["http"][-1]["route"][1:]:
            destination["weight"] = min(destination["weight"], 5)
        return obj

    with k8s_provider("istio", ApiServerDouble(defaults=webhook)) as (p, _):
        with caplog.at_level(logging.WARNING, "coalmine.providers.k8s"):
            p.sync(CANARY)
        assert "holds other values than applied" in caplog.text
        assert "spec.http[1].route[1].weight: 5 -> 10" in caplog.text
        assert p.sync(CANARY) != []
