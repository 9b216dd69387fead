"""`istio`: the model's split and mirror as one VirtualService (networking.istio.io/v1).

http routes, in order (Istio takes the first that matches):
  1. `coalmine-testers` (when `tester_header` is set and there is a candidate): the header
     with that exact value goes to the candidate (the canary, else the shadow);
  2. `coalmine-split`: `route[].weight` per version (stable, canary, baseline) and, for the
     shadow, `mirror` with `mirrorPercentage.value` (a double: basis points are exact).

Weights are relative proportions (the CRD says so): whole percents stay percents (95/5),
finer shares are the smallest exact integers (25.5% -> 149/51). The split is per request;
an Istio DestinationRule's consistent hash balances inside one destination, not across the
weighted ones, so a sticky key is not honoured here (see docs/traffic-layer.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from coalmine.config import ModelConfig
from coalmine.config_k8s import IstioDestination, IstioTraffic
from coalmine.providers.base import ProviderError
from coalmine.providers.k8s import (
    KubernetesApi,
    KubernetesProvider,
    ResourceKind,
    load_client,
    warn_if_sticky,
)
from coalmine.providers.k8s_objects import Manifest, relative_weights
from coalmine.providers.registry import register
from coalmine.routing.state import BASIS_POINTS, RouteState

__all__ = ["VIRTUALSERVICE", "IstioProvider"]

VIRTUALSERVICE = ResourceKind("networking.istio.io", "v1", "virtualservices", "VirtualService")


class IstioProvider(KubernetesProvider):
    name = "istio"
    resource = VIRTUALSERVICE
    settings: IstioTraffic

    def __init__(self, model: str, settings: IstioTraffic, api: KubernetesApi) -> None:
        super().__init__(model, settings, settings.virtual_service, api)

    def render(self, route: RouteState) -> Manifest:
        s = self.settings
        spec: dict[str, Any] = {"hosts": list(s.hosts)}
        if s.gateways:
            spec["gateways"] = list(s.gateways)
        http = []
        candidate = route.canary if route.canary is not None else route.shadow
        if s.tester_header is not None and candidate is not None:
            match = self._match()
            match["headers"] = {s.tester_header.name: {"exact": s.tester_header.value}}
            http.append(
                {
                    "name": "coalmine-testers",
                    "match": [match],
                    "route": [{"destination": self._destination(candidate), "weight": 100}],
                }
            )
        split: dict[str, Any] = {
            "name": "coalmine-split",
            "match": [self._match()],
            "route": self._split(route),
        }
        if route.shadow is not None and route.mirror_bp > 0:
            split["mirror"] = self._destination(route.shadow)
            split["mirrorPercentage"] = {"value": route.mirror_bp / 100}
        http.append(split)
        spec["http"] = http
        return {**self.header(), "spec": spec}

    def _match(self) -> dict[str, Any]:
        return {"uri": {"prefix": self.settings.path_prefix}}

    def _target(self, version: str) -> IstioDestination:
        try:
            return self.settings.destinations[version]
        except KeyError:
            raise ProviderError(
                f"traffic.destinations: version {version!r} of {self.model} has no destination"
            ) from None

    def _destination(self, version: str) -> dict[str, Any]:
        return _as_destination(self._target(version))

    def _split(self, route: RouteState) -> list[dict[str, Any]]:
        canary = route.canary_weight_bp if route.canary is not None else 0
        baseline = route.baseline_bp if route.baseline_url else 0
        parts: list[tuple[IstioDestination, int]] = [
            (self._target(route.stable), BASIS_POINTS - canary - baseline)
        ]
        if canary > 0 and route.canary is not None:
            parts.append((self._target(route.canary), canary))
        if baseline > 0:
            if self.settings.baseline is None:
                raise ProviderError(
                    f"traffic.baseline: {self.model}'s route gives a baseline "
                    f"{baseline / 100:g}% but no baseline destination is configured"
                )
            parts.append((self.settings.baseline, baseline))
        weights = relative_weights([share for _, share in parts])
        return [
            {"destination": _as_destination(d), "weight": w}
            for (d, _), w in zip(parts, weights, strict=True)
        ]


def _as_destination(target: IstioDestination) -> dict[str, Any]:
    # a short name resolves in the VirtualService's namespace; another namespace needs the
    # fully qualified name (a name, never an address: the mesh resolves it in the cluster)
    host = (
        target.service
        if target.namespace is None
        else f"{target.service}.{target.namespace}.svc.cluster.local"
    )
    out: dict[str, Any] = {"host": host, "port": {"number": target.port}}
    if target.subset is not None:
        out["subset"] = target.subset
    return out


def _build(model: ModelConfig, engine: Engine) -> IstioProvider:
    settings = model.traffic
    if not isinstance(settings, IstioTraffic):
        raise ValueError(f"models[{model.name}].traffic: not an istio configuration")
    warn_if_sticky(model)
    return IstioProvider(model.name, settings, KubernetesApi(lambda: load_client(settings)))


register(IstioProvider.name, _build)
