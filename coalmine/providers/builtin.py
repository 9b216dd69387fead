"""`builtin`: Coalmine's own gateway. The store's route is the truth the gateway polls, so
the desired state is the route's fields and applying writes only what differs to the store
(the controller has normally written it already: then applying touches nothing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from coalmine.config import ModelConfig
from coalmine.providers.base import TrafficProvider
from coalmine.providers.registry import register
from coalmine.routing.state import RouteState
from coalmine.store.routes import ROUTE_FIELDS, RouteRepository

__all__ = ["BuiltinProvider"]

RouteFields = dict[str, Any]


class BuiltinProvider(TrafficProvider[RouteFields]):
    name = "builtin"

    def __init__(self, model: str, routes: RouteRepository) -> None:
        self.model = model
        self.routes = routes

    def render(self, route: RouteState) -> RouteFields:
        return {f: getattr(route, f) for f in sorted(ROUTE_FIELDS)}

    def read(self) -> RouteFields | None:
        current = self.routes.get(self.model)
        return None if current is None else self.render(current)

    def diff(self, desired: RouteFields, current: RouteFields | None) -> list[str]:
        if current is None:
            return [f"model {self.model!r} has no route in the store"]
        return [
            f"{f}: {current.get(f)!r} -> {desired[f]!r}"
            for f in desired
            if current.get(f) != desired[f]
        ]

    def apply(self, desired: RouteFields) -> None:
        current = self.read() or {}
        changes = {f: v for f, v in desired.items() if current.get(f) != v}
        if changes:
            self.routes.set_route(self.model, **changes)


def _build(model: ModelConfig, engine: Engine) -> BuiltinProvider:
    return BuiltinProvider(model.name, RouteRepository(engine))


register(BuiltinProvider.name, _build)
