"""The Kubernetes providers' shared I/O: server-side apply through the official client.

Each Kubernetes provider renders one object (pure); this module reads it back and applies
it: `GET` the object, cut it down to the fields the `coalmine` field manager owns
(`k8s_objects.owned_manifest`), diff, and when they differ `PATCH` it with content type
`application/apply-patch+yaml` under `fieldManager=coalmine`. Server-side apply is
idempotent by design and removes a field Coalmine applied before and no longer sends, while
fields other managers own (the team's own manifest, a controller's status) stay theirs.

The API server and its credentials come from the kubeconfig or the pod's service account,
only when first needed, and are never logged; error messages carry the API's status and its
own message, not the request or its headers.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from urllib3.exceptions import HTTPError

from coalmine.config import ModelConfig
from coalmine.config_k8s import KubernetesTraffic
from coalmine.providers.base import ProviderError, TrafficProvider
from coalmine.providers.k8s_objects import (
    FIELD_MANAGER,
    Manifest,
    diff_manifests,
    owned_manifest,
)
from coalmine.routing.state import RouteState

if TYPE_CHECKING:  # the client is an optional dependency (the `k8s` extra)
    from kubernetes.client import ApiClient

__all__ = [
    "APPLY_PATCH",
    "KubernetesApi",
    "KubernetesProvider",
    "ResourceKind",
    "load_client",
    "warn_if_sticky",
]

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the client sends JSON
_TIMEOUT_S = (5.0, 30.0)  # connect, read


@dataclass(frozen=True)
class ResourceKind:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def load_client(settings: KubernetesTraffic) -> ApiClient:
    """An API client for the configured cluster: the kubeconfig (and context) when named,
    else the pod's in-cluster service account, else the default kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ProviderError(
            "the Kubernetes providers need the official client: pip install 'coalmine[k8s]'"
        ) from None
    try:
        if settings.kubeconfig is None and settings.context is None:
            try:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            except config.ConfigException:
                pass  # not in a pod: the default kubeconfig
        return config.new_client_from_config(
            config_file=None if settings.kubeconfig is None else str(settings.kubeconfig),
            context=settings.context,
        )
    except (config.ConfigException, OSError, ValueError) as exc:
        # the loader's messages name files and contexts, never a token
        raise ProviderError(f"traffic.kubeconfig: cannot load a cluster config: {exc}") from None


def warn_if_sticky(model: ModelConfig) -> None:
    """These layers split per request: say so at start when the config asks for stickiness
    (a warning, not an error: the rollout still works, only the per-user promise does not)."""
    if model.routing.sticky is not None:
        log.warning(
            "%s: routing.sticky is not honoured by traffic.provider %s, which splits per "
            "request: a user may meet both versions during a canary",
            model.name,
            model.traffic.provider,
        )


class KubernetesApi:
    """Get and server-side apply one namespaced custom object; the client is made lazily so
    a model's config loads (and `coalmine routes diff` runs) before any cluster is reached."""

    def __init__(self, client_factory: Callable[[], ApiClient]) -> None:
        self._factory = client_factory
        self._client: ApiClient | None = None

    def _objects(self) -> Any:
        from kubernetes.client import CustomObjectsApi

        if self._client is None:
            self._client = self._factory()
        return CustomObjectsApi(self._client)

    def get(self, kind: ResourceKind, namespace: str, name: str) -> Manifest | None:
        """The live object, or None when the API says 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._objects().get_namespaced_custom_object(
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                _request_timeout=_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ProviderError(_refusal(f"GET {kind.kind} {namespace}/{name}", exc)) from None
        except (OSError, HTTPError) as exc:  # the cluster unreachable: refused, timed out
            raise ProviderError(f"GET {kind.kind} {namespace}/{name}: {exc}") from None
        return dict(found)

    def apply(self, kind: ResourceKind, manifest: Manifest, *, force: bool) -> Manifest:
        """Server-side apply `manifest` as the `coalmine` field manager, then read the object
        back (the client decodes a 200 answer but not the 201 of a create, so one GET gives
        the same picture either way)."""
        from kubernetes.client.exceptions import ApiException

        meta = manifest["metadata"]
        where = f"{kind.kind} {meta['namespace']}/{meta['name']}"
        try:
            self._objects().patch_namespaced_custom_object(
                kind.group,
                kind.version,
                meta["namespace"],
                kind.plural,
                meta["name"],
                manifest,
                field_manager=FIELD_MANAGER,
                field_validation="Strict",  # an unknown field is refused, never pruned
                force=force,
                _content_type=APPLY_PATCH,
                _request_timeout=_TIMEOUT_S,
            )
        except ApiException as exc:
            raise ProviderError(_refusal(f"apply {where}", exc)) from None
        except (OSError, HTTPError) as exc:
            raise ProviderError(f"apply {where}: {exc}") from None
        after = self.get(kind, meta["namespace"], meta["name"])
        if after is None:
            raise ProviderError(f"apply {where}: accepted, but the object is not there after")
        return after


def _refusal(action: str, exc: Any) -> str:
    """The API's own words (a `Status` object's message and causes), never the headers."""
    import json

    status, reason = exc.status, exc.reason
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    hint = {
        409: " (another field manager owns these fields; traffic.force_conflicts: true "
        "takes them back)",
        403: " (the service account may not do this: see the Role in the guide)",
    }.get(status, "")
    return f"{action}: the API answered {status} {reason}: {message or '(no message)'}{hint}"


class KubernetesProvider(TrafficProvider[Manifest]):
    """One object in one namespace, rendered by the subclass, applied server-side."""

    resource: ClassVar[ResourceKind]

    def __init__(
        self, model: str, settings: KubernetesTraffic, object_name: str, api: KubernetesApi
    ) -> None:
        self.model = model
        self.settings = settings
        self.object_name = object_name
        self.api = api

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.object_name,
            "namespace": self.settings.namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            "annotations": {"coalmine.io/model": self.model},
        }

    def header(self) -> Manifest:
        return {
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": self.metadata(),
        }

    @abstractmethod
    def render(self, route: RouteState) -> Manifest: ...

    def live(self) -> Manifest | None:
        """The whole live object (None: not there), as the API returns it."""
        return self.api.get(self.resource, self.settings.namespace, self.object_name)

    def read(self) -> Manifest | None:
        live = self.live()
        return None if live is None else owned_manifest(live)

    def diff(self, desired: Manifest, current: Manifest | None) -> list[str]:
        if current is None:
            return [
                f"{self.resource.kind} {self.settings.namespace}/{self.object_name}: "
                "not created yet"
            ]
        return diff_manifests(desired, current)

    def sync(self, route: RouteState) -> list[str]:
        # one GET for the read, diff and apply (the base's would read twice)
        desired = self.render(route)
        live = self.live()
        changes = self.diff(desired, None if live is None else owned_manifest(live))
        if changes:
            self.converge(desired, live)
        return changes

    def apply(self, desired: Manifest) -> None:
        live = self.live()
        if self.diff(desired, None if live is None else owned_manifest(live)):
            self.converge(desired, live)  # idempotent: the cluster holds it, nothing sent

    def converge(self, desired: Manifest, live: Manifest | None) -> None:
        """Bring the object from `live` to `desired` (they differ); one apply by default."""
        self.apply_now(desired)

    def apply_now(self, desired: Manifest) -> Manifest:
        """One server-side apply; warns when the object after it is not what was sent (a
        mutating webhook or a default this provider does not render)."""
        result = owned_manifest(
            self.api.apply(self.resource, desired, force=self.settings.force_conflicts)
        )
        if left := diff_manifests(desired, result):
            log.warning(
                "%s: %s %s holds other values than applied: %s",
                self.model,
                self.resource.kind,
                self.object_name,
                "; ".join(left)[:500],
            )
        return result
