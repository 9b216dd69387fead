"""The published CRDs (Gateway API, Istio, KServe) as JSON-schema validators and defaulters.

The CRD files are not part of this project: they live in `../shared/k8s-crds/` beside the
project root (byte-for-byte upstream copies, see SOURCES.md there), or where
`COALMINE_K8S_CRDS` points. Tests that need them skip with that reason when they are absent.

A CRD's OpenAPI v3 schema is structural: the API server prunes (or, with
`fieldValidation=Strict`, refuses) fields the schema does not declare, so the validator
made here closes every declared object (`additionalProperties: false`) unless the schema
keeps unknown fields on purpose; CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import copy
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = Path(os.environ.get("COALMINE_K8S_CRDS") or ROOT.parent / "shared" / "k8s-crds")
FILES = {
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
    "VirtualService": "istio-api_customresourcedefinitions.gen.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}


def crds_available() -> bool:
    return all((CRD_DIR / name).exists() for name in FILES.values())


def require_crds() -> None:
    if not crds_available():
        pytest.skip(
            f"the published CRDs are not at {CRD_DIR} (../shared/k8s-crds beside the project, "
            "or COALMINE_K8S_CRDS): the project does not ship copies of them"
        )


@cache
def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The OpenAPI v3 schema of `kind` at `version`, from its published CRD."""
    require_crds()
    with open(CRD_DIR / FILES[kind]) as f:
        for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc.get("spec", {}).get("names", {}).get("kind") == kind:
                for v in doc["spec"]["versions"]:
                    if v["name"] == version:
                        return dict(v["schema"]["openAPIV3Schema"])
    raise LookupError(f"{kind} {version} is not in {FILES[kind]}")


def _closed(schema: Any) -> Any:
    """The schema with every declared object closed to undeclared fields (as the server's
    strict field validation is), keeping `x-kubernetes-preserve-unknown-fields` open."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k == "properties" else _closed(v)) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if "properties" in schema:  # property names are data here, not keywords: close them too
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
    return out


@cache
def _validator(kind: str, version: str) -> Any:
    import jsonschema_rs

    schema = _closed(crd_schema(kind, version))
    # every object has these (some CRDs, e.g. Istio's, declare only spec and status);
    # metadata is checked by the API server's own rules, not the CRD's
    schema["properties"] = {
        **schema["properties"],
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    return jsonschema_rs.Draft4Validator(schema)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way `manifest` breaks its published schema (empty: it is valid)."""
    kind = manifest["kind"]
    version = manifest["apiVersion"].split("/")[-1]
    return [
        f"{'/'.join(str(p) for p in e.instance_path)}: {e.message}"
        for e in _validator(kind, version).iter_errors(manifest)
    ]


def with_defaults(schema: Any, value: Any) -> Any:
    """`value` with the schema's `default`s filled in where a field is absent, as the API
    server does for a structural schema before it stores an object."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        out = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = with_defaults(sub, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], item) for item in value]
    return value
