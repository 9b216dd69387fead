"""What each model's traffic layer holds against the stored route, for `coalmine routes
diff|apply --traffic` (I/O: reads the store and the layers, writes the layers on apply).

The controller keeps the layers in sync on its own (`sync.TrafficSync`); these let an
operator see a layer's drift (a hand edit of an HTTPRoute, an nginx file replaced) and
bring a layer to the stored route without waiting for the controller's next tick.
`builtin` models are left out: the gateway polls the store itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine

from coalmine.config import CoalmineConfig
from coalmine.providers.base import ProviderError
from coalmine.providers.registry import build
from coalmine.store.routes import RouteRepository

__all__ = ["LayerReport", "layer_drift", "sync_layers"]

# model -> (provider name, one line per difference or change; None: the layer refused)
LayerReport = dict[str, tuple[str, list[str], str | None]]


def _each(
    config: CoalmineConfig, engine: Engine, models: Iterable[str] | None, apply: bool
) -> LayerReport:
    wanted = None if models is None else set(models)
    routes = RouteRepository(engine)
    report: LayerReport = {}
    for model in config.models:
        name = model.traffic.provider
        if name == "builtin" or (wanted is not None and model.name not in wanted):
            continue
        route = routes.get(model.name)
        if route is None:
            report[model.name] = (name, [], "no route in the store yet (start coalmine once)")
            continue
        try:
            provider = build(model, engine)
            if apply:
                lines = provider.sync(route)
            else:
                lines = provider.diff(provider.render(route), provider.read())
        except (ProviderError, ValueError) as exc:
            report[model.name] = (name, [], str(exc))
            continue
        report[model.name] = (name, lines, None)
    return report


def layer_drift(
    config: CoalmineConfig, engine: Engine, models: Iterable[str] | None = None
) -> LayerReport:
    """Per model routed outside the gateway: how its layer differs from the stored route."""
    return _each(config, engine, models, apply=False)


def sync_layers(
    config: CoalmineConfig, engine: Engine, models: Iterable[str] | None = None
) -> LayerReport:
    """Bring each layer to the stored route now; the changes each one took."""
    return _each(config, engine, models, apply=True)
