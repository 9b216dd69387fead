"""`gateway-api`: the model's split and mirror as one HTTPRoute (gateway.networking.k8s.io/v1).

Rules, in the order the route lists them:
  1. testers (when `tester_header` is set and there is a candidate): requests with that
     header and value go to the candidate (the canary, else the shadow). Gateway API gives
     a rule with more header matches precedence over one with fewer on the same path, so
     testers always win over the split;
  2. the split: `backendRefs[].weight` per version (stable, canary, baseline), and the
     standard `RequestMirror` filter for the shadow's share: `percent` for whole percents,
     `fraction` (numerator/10000) for finer ones (Gateway API >= v1.3, standard channel).

Every field the schema defaults is rendered explicitly, so the object the server stores
(defaults filled in) is the object rendered and a repeat apply finds no difference. The
split is per request: Gateway API has no sticky split in its standard channel, so a sticky
key in `routing.sticky` is not honoured here (see docs/traffic-layer.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from coalmine.config import ModelConfig
from coalmine.config_k8s import GatewayApiTraffic, ServiceBackend
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

__all__ = ["HTTPROUTE", "GatewayApiProvider"]

HTTPROUTE = ResourceKind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


class GatewayApiProvider(KubernetesProvider):
    name = "gateway-api"
    resource = HTTPROUTE
    settings: GatewayApiTraffic

    def __init__(self, model: str, settings: GatewayApiTraffic, api: KubernetesApi) -> None:
        super().__init__(model, settings, settings.route, api)

    # -- pure ----------------------------------------------------------------------------

    def render(self, route: RouteState) -> Manifest:
        s = self.settings
        spec: dict[str, Any] = {"parentRefs": [_parent(p) for p in s.parent_refs]}
        if s.hostnames:
            spec["hostnames"] = list(s.hostnames)
        rules = []
        candidate = route.canary if route.canary is not None else route.shadow
        if s.tester_header is not None and candidate is not None:
            rules.append(
                {
                    "name": "coalmine-testers",
                    "matches": [
                        {
                            "path": self._path(),
                            "headers": [
                                {
                                    "type": "Exact",
                                    "name": s.tester_header.name,
                                    "value": s.tester_header.value,
                                }
                            ],
                        }
                    ],
                    "backendRefs": [self._backend(candidate, 1)],
                }
            )
        split: dict[str, Any] = {"name": "coalmine-split", "matches": [{"path": self._path()}]}
        if route.shadow is not None and route.mirror_bp > 0:
            split["filters"] = [self._mirror(route.shadow, route.mirror_bp)]
        split["backendRefs"] = self._split(route)
        rules.append(split)
        spec["rules"] = rules
        return {**self.header(), "spec": spec}

    def _path(self) -> dict[str, str]:
        return {"type": "PathPrefix", "value": self.settings.path_prefix}

    def _service(self, version: str) -> ServiceBackend:
        try:
            return self.settings.backends[version]
        except KeyError:
            raise ProviderError(
                f"traffic.backends: version {version!r} of {self.model} has no Service"
            ) from None

    def _ref(self, backend: ServiceBackend) -> dict[str, Any]:
        return {"group": "", "kind": "Service", "name": backend.service, "port": backend.port}

    def _backend(self, version: str, weight: int) -> dict[str, Any]:
        return {**self._ref(self._service(version)), "weight": weight}

    def _split(self, route: RouteState) -> list[dict[str, Any]]:
        canary = route.canary_weight_bp if route.canary is not None else 0
        baseline = route.baseline_bp if route.baseline_url else 0
        parts: list[tuple[ServiceBackend, int]] = [
            (self._service(route.stable), BASIS_POINTS - canary - baseline)
        ]
        if canary > 0 and route.canary is not None:
            parts.append((self._service(route.canary), canary))
        if baseline > 0:
            if self.settings.baseline is None:
                raise ProviderError(
                    f"traffic.baseline: {self.model}'s route gives a baseline "
                    f"{baseline / 100:g}% but no baseline Service is configured"
                )
            parts.append((self.settings.baseline, baseline))
        weights = relative_weights([share for _, share in parts])
        return [{**self._ref(b), "weight": w} for (b, _), w in zip(parts, weights, strict=True)]

    def _mirror(self, shadow: str, mirror_bp: int) -> dict[str, Any]:
        mirror: dict[str, Any] = {"backendRef": self._ref(self._service(shadow))}
        if mirror_bp % 100 == 0:
            mirror["percent"] = mirror_bp // 100
        else:
            numerator, denominator = relative_weights([mirror_bp, BASIS_POINTS])
            mirror["fraction"] = {"numerator": numerator, "denominator": denominator}
        return {"type": "RequestMirror", "requestMirror": mirror}


def _parent(ref: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": ref.name,
    }
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    return out


def _build(model: ModelConfig, engine: Engine) -> GatewayApiProvider:
    settings = model.traffic
    if not isinstance(settings, GatewayApiTraffic):
        raise ValueError(f"models[{model.name}].traffic: not a gateway-api configuration")
    warn_if_sticky(model)
    return GatewayApiProvider(model.name, settings, KubernetesApi(lambda: load_client(settings)))


register(GatewayApiProvider.name, _build)
