"""deploy/kubernetes/: the kustomize base is valid against Kubernetes' published schemas,
and its objects fit together and with Coalmine itself (commands, ports, config, secrets).

Schemas: every built-in object (Namespace, ConfigMap, ServiceAccount, Role, RoleBinding,
Deployment, Service, PodDisruptionBudget) and the example Secret are validated with
`kubernetes-validate` (the JSON schemas generated from Kubernetes' own OpenAPI documents,
shipped in the package, so this runs offline) in strict mode (no unknown field) for the
oldest and the newest Kubernetes it has that we support. The ServiceMonitor is a custom
resource of the Prometheus Operator: its schema is in the operator's published CRD, which
this project does not ship. It is validated against that CRD when the file
`monitoring.coreos.com_servicemonitors.yaml` is in the CRD directory the provider tests use
(`$COALMINE_K8S_CRDS`, else `../shared/k8s-crds` beside the project); otherwise that test is
skipped, and `test_the_servicemonitor_scrapes_the_gateway_service` still checks its
structure: the fields used are the CRD's (v0.93.0), typed as there, and it selects the
gateway Service and its named port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    BASE,
    ROOT,
    SECRET_EXAMPLE,
    base_objects,
    by_kind,
    kustomization,
    load_all,
    selects,
)

K8S_VERSIONS = ["1.28.0", "1.37.0"]  # oldest here with every API used; newest in the package
CRD_DIR = Path(os.environ.get("COALMINE_K8S_CRDS") or ROOT.parent / "shared" / "k8s-crds")
SERVICEMONITOR_CRD = CRD_DIR / "monitoring.coreos.com_servicemonitors.yaml"
DOCKERFILE_UID = 10001  # the Dockerfile's USER


def _builtin(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"] != "monitoring.coreos.com/v1"]


def _id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _deployments() -> dict[str, dict[str, Any]]:
    return by_kind(base_objects(), "Deployment")


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_is_valid_against_the_published_schemas(version: str) -> None:
    import kubernetes_validate

    objects = _builtin(base_objects()) + load_all(SECRET_EXAMPLE)
    assert len(objects) >= 14
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{_id(obj)} against Kubernetes {version}: {path}: {exc.message}")


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """The check has teeth: a misspelt field and a wrong type are both refused."""
    import kubernetes_validate

    gateway = _deployments()["coalmine-gateway"]
    bad = yaml.safe_load(yaml.safe_dump(gateway))
    bad["spec"]["replica"] = 3  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(gateway))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_the_base_lists_every_manifest_and_no_secret() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {o["kind"] for o in base_objects()}
    assert "Secret" not in kinds  # secrets are created by the operator, never applied from git
    assert {"Deployment", "Service", "ConfigMap", "ServiceMonitor",
            "PodDisruptionBudget"} <= kinds  # fmt: skip
    assert all(o["metadata"].get("namespace") == "coalmine" for o in base_objects()
               if o["kind"] != "Namespace")  # fmt: skip


def test_replicas_gateway_several_controller_two_api_stateless() -> None:
    d = _deployments()
    assert set(d) == {"coalmine-gateway", "coalmine-controller", "coalmine-api"}
    assert d["coalmine-gateway"]["spec"]["replicas"] >= 2
    assert d["coalmine-controller"]["spec"]["replicas"] == 2
    assert d["coalmine-api"]["spec"]["replicas"] >= 2


def test_selectors_match_their_pods_and_services_reach_named_ports() -> None:
    objects = base_objects()
    deployments = _deployments()
    for d in deployments.values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selects(d["spec"]["selector"]["matchLabels"], labels), _id(d)
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for service in by_kind(objects, "Service").values():
        chosen = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert chosen == [service["metadata"]["name"]], _id(service)
        ports = {p["name"] for c in _pod(deployments[chosen[0]])["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (_id(service), port)
    for pdb in by_kind(objects, "PodDisruptionBudget").values():
        chosen = [n for n, labels in pods.items()
                  if selects(pdb["spec"]["selector"]["matchLabels"], labels)]  # fmt: skip
        assert len(chosen) == 1, _id(pdb)
        replicas = deployments[chosen[0]]["spec"]["replicas"]
        # a drain may proceed (never blocked for good) and never takes every replica
        if "minAvailable" in pdb["spec"]:
            assert 1 <= pdb["spec"]["minAvailable"] < replicas
        else:
            assert 1 <= pdb["spec"]["maxUnavailable"] < replicas


def test_the_servicemonitor_scrapes_the_gateway_service() -> None:
    objects = base_objects()
    monitors = by_kind(objects, "ServiceMonitor")
    assert list(monitors) == ["coalmine-gateway"]
    monitor = monitors["coalmine-gateway"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    services = by_kind(objects, "Service")
    chosen = [n for n, s in services.items()
              if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]  # fmt: skip
    assert chosen == ["coalmine-gateway"]
    port_names = {p["name"] for p in services["coalmine-gateway"]["spec"]["ports"]}
    import re

    duration = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                          r"(([0-9]+)s)?(([0-9]+)ms)?)$")  # the CRD's pattern  # fmt: skip
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        assert all(duration.match(endpoint[k]) for k in ("interval", "scrapeTimeout")
                   if k in endpoint)  # fmt: skip


def _closed(schema: Any) -> Any:
    """A structural schema as the API server's strict field validation reads it: every
    declared object refuses undeclared fields unless it keeps unknown fields on purpose."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    return out


def test_the_servicemonitor_is_valid_against_the_operators_published_crd() -> None:
    if not SERVICEMONITOR_CRD.exists():
        pytest.skip(f"the Prometheus Operator's ServiceMonitor CRD is not at {SERVICEMONITOR_CRD}")
    import jsonschema_rs

    crd = load_all(SERVICEMONITOR_CRD)[0]
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    validator = jsonschema_rs.Draft4Validator(_closed(v1["schema"]["openAPIV3Schema"]))
    monitor = by_kind(base_objects(), "ServiceMonitor")["coalmine-gateway"]
    assert [e.message for e in validator.iter_errors(monitor)] == []
    bad = yaml.safe_load(yaml.safe_dump(monitor))
    bad["spec"]["endpoints"][0]["intervall"] = "15s"  # the check has teeth
    assert list(validator.iter_errors(bad))


def test_every_container_runs_a_real_coalmine_command(tmp_path: Path) -> None:
    """The args parse strictly as the `coalmine` CLI's own command and options (a renamed
    or misspelt flag would break the deployment, not just this test)."""
    import typer.main

    from coalmine.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    config = tmp_path / "coalmine.yaml"  # the mounted file, which must exist
    config.write_text("models: []\n")
    parsed: dict[str, dict[str, Any]] = {}
    for name, d in _deployments().items():
        (container,) = _pod(d)["containers"]
        assert "command" not in container  # the image's entry point: coalmine
        mount = "/etc/coalmine/coalmine.yaml"
        args = [str(config) if a == mount else a for a in container["args"]]
        assert str(config) in args, (name, container["args"])
        assert args[0] in commands, (name, args[0])
        context = commands[args[0]].make_context(args[0], args[1:])
        parsed[name] = {"command": args[0], **context.params}
    assert parsed["coalmine-gateway"]["command"] == "gateway"
    controller, api = parsed["coalmine-controller"], parsed["coalmine-api"]
    assert controller["command"] == api["command"] == "serve"
    assert (controller["gateway"], controller["api"], controller["controller"]) == (
        False, False, True)  # fmt: skip
    assert (api["gateway"], api["api"], api["controller"]) == (False, True, False)
    with pytest.raises(Exception, match="no-apii"):  # the check has teeth
        commands["serve"].make_context("serve", ["--config", str(config), "--no-apii"])


def test_the_config_is_valid_has_no_secret_and_listens_on_the_container_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coalmine.config import CoalmineConfig

    (configmap,) = by_kind(base_objects(), "ConfigMap").values()
    raw = yaml.safe_load(configmap["data"]["coalmine.yaml"])
    assert "url" not in (raw.get("store") or {})  # from the Secret, as $COALMINE_STORE_URL
    assert "token" not in (raw.get("api") or {})
    assert "feedback_token" not in (raw.get("gateway") or {})
    monkeypatch.setenv("COALMINE_STORE_URL", "postgresql+psycopg://u:p@db:5432/coalmine")
    config = CoalmineConfig.model_validate(raw)
    assert config.store.url.startswith("postgresql+psycopg://")
    d = _deployments()
    ports = {n: _pod(x)["containers"][0].get("ports", [{}])[0].get("containerPort")
             for n, x in d.items()}  # fmt: skip
    assert config.gateway.host == config.api.host == "0.0.0.0"
    assert ports["coalmine-gateway"] == config.gateway.port
    assert ports["coalmine-api"] == config.api.port


def test_secrets_come_from_one_secret_with_the_keys_the_example_documents() -> None:
    (example,) = load_all(SECRET_EXAMPLE)
    keys = set(example["stringData"])
    env_of: dict[str, dict[str, Any]] = {}
    for name, d in _deployments().items():
        for container in _pod(d)["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert "value" not in env or not any(
                    w in env["name"] for w in ("TOKEN", "PASSWORD", "SECRET", "URL")
                ), (name, env["name"])  # a secret's value is never written in a manifest
                if ref:
                    assert ref["name"] == "coalmine" and ref["key"] in keys, (name, ref)
                    env_of.setdefault(name, {})[env["name"]] = ref
    # every part needs the store; only the API needs its token; only these are optional
    for name in ("coalmine-gateway", "coalmine-controller", "coalmine-api"):
        assert env_of[name]["COALMINE_STORE_URL"].get("optional") is not True
    assert env_of["coalmine-api"]["COALMINE_TOKEN"].get("optional") is not True
    assert "COALMINE_TOKEN" not in env_of["coalmine-gateway"]
    assert env_of["coalmine-gateway"]["COALMINE_FEEDBACK_TOKEN"]["optional"] is True


def test_pods_run_unprivileged_as_the_images_user() -> None:
    for name, d in _deployments().items():
        pod = _pod(d)
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == DOCKERFILE_UID
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["image"].split(":")[0] == "coalmine", name
            assert "memory" in c["resources"]["limits"], name
    # only the controller may call the Kubernetes API (its traffic providers)
    assert _pod(_deployments()["coalmine-gateway"])["automountServiceAccountToken"] is False
    assert _pod(_deployments()["coalmine-api"])["automountServiceAccountToken"] is False


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) is absent")
def test_kustomize_renders_the_base_with_the_image_and_namespace() -> None:
    import kubernetes_validate

    done = subprocess.run(["kubectl", "kustomize", str(BASE)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert sorted(map(_id, rendered)) == sorted(map(_id, base_objects()))
    for obj in _builtin(rendered):
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
    images = {c["image"] for o in rendered if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {"coalmine:0.1.0"}
