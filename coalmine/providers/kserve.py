"""`kserve`: the model's canary as an InferenceService's `canaryTrafficPercent`
(serving.kserve.io/v1beta1, serverless mode).

KServe keeps one predictor spec and splits between revisions of it: with
`canaryTrafficPercent: N` the latest revision gets N% and the last revision rolled out at
100% gets the rest; without it the latest ready revision gets everything. So Coalmine owns
`spec.predictor.model` (format, runtime, the version's `storageUri`) and
`canaryTrafficPercent`:
  - no canary: the stable's storageUri, no canaryTrafficPercent;
  - a canary at w: the canary's storageUri, canaryTrafficPercent = w as a whole percent
    (KServe takes integers: a step rounds to the nearest percent, never to 0 or 100).

What it cannot do: mirror. KServe has no mirror; a shadow's share is not rendered here, and
the shadow's predictions reach Coalmine through the collector (KServe's inference logger
CloudEvents), with the mirror made by the mesh in front. Nor is the split sticky.

Rolling back reverts the spec, which makes KServe start a new revision of the stable model;
until it is ready, "the latest ready revision" is still the canary's. So a rollback first
applies `canaryTrafficPercent: 0` with the stable's spec — all traffic pinned at once to the
last rolled-out revision (KServe's documented rollback) — and drops the pin only when the
InferenceService reports its newest revision ready.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import Engine

from coalmine.config import ModelConfig
from coalmine.config_k8s import KServeTraffic
from coalmine.providers.base import ProviderError
from coalmine.providers.k8s import (
    KubernetesApi,
    KubernetesProvider,
    ResourceKind,
    load_client,
    warn_if_sticky,
)
from coalmine.providers.k8s_objects import Manifest, owned_manifest, whole_percent
from coalmine.providers.registry import register
from coalmine.routing.state import RouteState

__all__ = ["INFERENCESERVICE", "KServeProvider", "revision_ready"]

INFERENCESERVICE = ResourceKind(
    "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
)


def revision_ready(live: Manifest) -> bool:
    """KServe has seen the current spec and its newest predictor revision is ready."""
    status = live.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    generation = (live.get("metadata") or {}).get("generation")
    created = predictor.get("latestCreatedRevision")
    return (
        status.get("observedGeneration") == generation
        and created is not None
        and predictor.get("latestReadyRevision") == created
    )


def _predictor(manifest: Manifest | None) -> dict[str, Any]:
    return ((manifest or {}).get("spec") or {}).get("predictor") or {}


class KServeProvider(KubernetesProvider):
    name = "kserve"
    resource = INFERENCESERVICE
    settings: KServeTraffic

    def __init__(self, model: str, settings: KServeTraffic, api: KubernetesApi) -> None:
        super().__init__(model, settings, settings.inference_service, api)

    # -- pure ----------------------------------------------------------------------------

    def render(self, route: RouteState) -> Manifest:
        s = self.settings
        canary = route.canary if route.canary is not None and route.canary_weight_bp > 0 else None
        version = canary or route.stable
        try:
            uri = s.storage_uris[version]
        except KeyError:
            raise ProviderError(
                f"traffic.storage_uris: version {version!r} of {self.model} has no storageUri"
            ) from None
        model_format: dict[str, Any] = {"name": s.model_format}
        if s.model_format_version is not None:
            model_format["version"] = s.model_format_version
        model: dict[str, Any] = {"modelFormat": model_format, "storageUri": uri}
        if s.runtime is not None:
            model["runtime"] = s.runtime
        predictor: dict[str, Any] = {"model": model}
        if canary is not None:
            predictor["canaryTrafficPercent"] = whole_percent(route.canary_weight_bp)
        return {**self.header(), "spec": {"predictor": predictor}}

    @staticmethod
    def rolling_back(desired: Manifest, current: Manifest | None) -> bool:
        """Pure: `desired` takes the canary away from a spec that still runs another model."""
        now, then = _predictor(current), _predictor(desired)
        return (
            "canaryTrafficPercent" not in then
            and "canaryTrafficPercent" in now
            and (now.get("model") or {}).get("storageUri")
            != (then.get("model") or {}).get("storageUri")
        )

    @staticmethod
    def pinned(desired: Manifest) -> Manifest:
        """Pure: `desired` with all traffic pinned to the last rolled-out revision."""
        out = copy.deepcopy(desired)
        out["spec"]["predictor"]["canaryTrafficPercent"] = 0
        return out

    # -- I/O -----------------------------------------------------------------------------

    def converge(self, desired: Manifest, live: Manifest | None) -> None:
        current = None if live is None else owned_manifest(live)
        pin = self.pinned(desired)
        if self.rolling_back(desired, current):
            live = self.api.apply(self.resource, pin, force=self.settings.force_conflicts)
        if live is not None and owned_manifest(live) == pin and not revision_ready(live):
            raise ProviderError(
                f"InferenceService {self.settings.namespace}/{self.object_name}: rolled back "
                "with traffic pinned to the last rolled-out revision; the stable's new "
                "revision is not ready yet, the pin is lifted at a later sync"
            )
        self.apply_now(desired)


def _build(model: ModelConfig, engine: Engine) -> KServeProvider:
    settings = model.traffic
    if not isinstance(settings, KServeTraffic):
        raise ValueError(f"models[{model.name}].traffic: not a kserve configuration")
    warn_if_sticky(model)
    return KServeProvider(model.name, settings, KubernetesApi(lambda: load_client(settings)))


register(KServeProvider.name, _build)
