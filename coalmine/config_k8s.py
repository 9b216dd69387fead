"""Settings of the Kubernetes traffic providers (`traffic:` of a model in the config file).

Part of `coalmine.config` (which re-exports these models in its `TrafficConfig` union), kept
in a module of its own so the core settings stay short. Every name that ends up in a
Kubernetes object or an API path is checked here against the API's own name rules, so a typo
is a config error naming the field, never a request the cluster refuses mid-rollout.

The API server itself is never named here: it comes from the kubeconfig (or the pod's
in-cluster service account), so nothing a config or rollout spec contains chooses a host.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "GatewayApiTraffic",
    "IstioDestination",
    "IstioTraffic",
    "KServeTraffic",
    "KubernetesTraffic",
    "ParentRef",
    "ServiceBackend",
    "TesterHeader",
]

# RFC 1123 label (namespaces, Service names) and subdomain (most object names)
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Label = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
Subdomain = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
# an HTTP header name (RFC 9110 token), as Gateway API's schema has it
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$"
Hostname = Annotated[
    str, Field(pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
]
Port = Annotated[int, Field(ge=1, le=65535)]


# the HTTPRoute CRD's CEL rules for an Exact/PathPrefix path (the API server enforces them;
# checked here so a bad prefix is a config error, not a refusal mid-rollout)
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")


def gateway_path_problem(path: str) -> str | None:
    """Why Gateway API would refuse `path` as a PathPrefix value (None: it would not)."""
    if not path.startswith("/"):
        return "must start with '/'"
    if not _PATH_CHARS.match(path):
        return "holds a character Gateway API refuses in a path"
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in path:
            return f"must not contain {bad!r}"
    if path.endswith(("/..", "/.")):
        return "must not end with '/.' or '/..'"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TesterHeader(_Strict):
    """Requests carrying this header with this value always reach the candidate (the canary,
    else the shadow): internal testers try it before any user does."""

    name: str = Field(pattern=HEADER_NAME)
    value: str = Field(
        min_length=1, max_length=256, pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
    )


class KubernetesTraffic(_Strict):
    """Where the object lives and how Coalmine reaches the cluster."""

    namespace: Label
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; default: in-cluster, else ~/.kube/config"
    )
    context: str | None = Field(default=None, min_length=1, description="kubeconfig context")
    force_conflicts: bool = Field(
        default=True,
        description="take back a field Coalmine owns that another manager changed (the API's "
        "advice for controllers); false: refuse and report the conflict",
    )

    def version_targets(self) -> dict[str, object]:
        """Version name -> where it runs; every version of the model needs one."""
        raise NotImplementedError


class ServiceBackend(_Strict):
    """A version's Kubernetes Service (in the route's namespace)."""

    service: Label
    port: Port


class ParentRef(_Strict):
    """The Gateway (or listener of it) the HTTPRoute attaches to."""

    name: Subdomain
    namespace: Label | None = None
    section_name: Subdomain | None = None


class GatewayApiTraffic(KubernetesTraffic):
    """Gateway API routes the model: Coalmine owns one HTTPRoute's rules."""

    provider: Literal["gateway-api"]
    route: Subdomain = Field(description="the HTTPRoute's name")
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    hostnames: list[Hostname] = Field(default_factory=list, max_length=16)
    path_prefix: str = Field(default="/", max_length=1024)
    backends: dict[str, ServiceBackend] = Field(min_length=1, description="version -> Service")
    baseline: ServiceBackend | None = Field(
        default=None, description="a fresh stable instance's Service, for baseline shares"
    )
    tester_header: TesterHeader | None = None

    @field_validator("path_prefix")
    @classmethod
    def _path_is_one_gateway_api_takes(cls, value: str) -> str:
        if problem := gateway_path_problem(value):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _same_parent_needs_distinct_sections(self) -> GatewayApiTraffic:
        # HTTPRoute's rule: two refs to one Gateway must each name a distinct listener
        seen: dict[tuple[str, str | None], list[str | None]] = {}
        for ref in self.parent_refs:
            seen.setdefault((ref.name, ref.namespace), []).append(ref.section_name)
        for (name, _), sections in seen.items():
            if len(sections) > 1 and (None in sections or len(set(sections)) < len(sections)):
                raise ValueError(
                    f"parent_refs: Gateway {name!r} listed twice needs a distinct "
                    "section_name in each"
                )
        return self

    def version_targets(self) -> dict[str, object]:
        return dict(self.backends)


class IstioDestination(_Strict):
    """A version as an Istio destination: a Service, optionally a DestinationRule subset."""

    service: Label
    port: Port
    subset: Label | None = None
    namespace: Label | None = Field(
        default=None, description="the Service's namespace, when not the VirtualService's"
    )


class IstioTraffic(KubernetesTraffic):
    """Istio routes the model: Coalmine owns one VirtualService's http routes."""

    provider: Literal["istio"]
    virtual_service: Subdomain
    hosts: list[Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")]] = Field(
        min_length=1, description="the VirtualService's hosts (what clients call)"
    )
    gateways: list[Annotated[str, Field(pattern=r"^[a-z0-9./-]{1,253}$")]] = Field(
        default_factory=list, description="empty: the mesh's sidecars only"
    )
    path_prefix: str = Field(default="/", pattern=r"^/[^\s]*$", max_length=1024)
    destinations: dict[str, IstioDestination] = Field(min_length=1)
    baseline: IstioDestination | None = None
    tester_header: TesterHeader | None = None

    @model_validator(mode="after")
    def _header_is_lowercase(self) -> IstioTraffic:
        # Istio matches header keys in lowercase only; an uppercase key never matches
        if self.tester_header is not None and self.tester_header.name != (
            self.tester_header.name.lower()
        ):
            raise ValueError("tester_header.name: Istio needs a lowercase header name")
        return self

    def version_targets(self) -> dict[str, object]:
        return dict(self.destinations)


class KServeTraffic(KubernetesTraffic):
    """KServe serves the model: Coalmine owns one InferenceService's predictor model and its
    canaryTrafficPercent. KServe cannot mirror: a shadow's predictions come through the
    collector (KServe's inference logger), not through this provider."""

    provider: Literal["kserve"]
    inference_service: Label
    model_format: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")
    model_format_version: str | None = Field(default=None, min_length=1, max_length=63)
    runtime: Subdomain | None = None
    storage_uris: dict[str, Annotated[str, Field(pattern=r"^[a-z][a-z0-9+.-]*://\S+$")]] = Field(
        min_length=1, description="version -> its model's storageUri"
    )

    def version_targets(self) -> dict[str, object]:
        return dict(self.storage_uris)
