"""Provider name (as the config file says it) -> the class that implements it.

An unknown or duplicate name raises: a typo in `traffic.provider` must never quietly leave
a model on another provider's traffic layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coalmine.config import ModelConfig
from coalmine.providers.base import TrafficProvider

if TYPE_CHECKING:  # the CLI imports this package and must not load SQLAlchemy
    from sqlalchemy import Engine

__all__ = ["Factory", "build", "names", "register"]

# builds a model's provider from its config entry and the store (where the route lives)
Factory = Callable[[ModelConfig, "Engine"], TrafficProvider[Any]]

_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Add a provider under `name`; a name registered twice is an error, never a swap."""
    if name in _FACTORIES:
        raise ValueError(f"traffic provider {name!r} is already registered")
    _FACTORIES[name] = factory


def names() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def build(model: ModelConfig, engine: Engine) -> TrafficProvider[Any]:
    """The provider `model.traffic.provider` names, for `model`; raises on an unknown name."""
    _load_builtins()
    name = model.traffic.provider
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"models[{model.name}].traffic.provider: unknown provider {name!r}; "
            f"known: {sorted(_FACTORIES)}"
        ) from None
    return factory(model, engine)


def _load_builtins() -> None:
    # imported here: each implementation imports this module to register itself
    from coalmine.providers import builtin, gateway_api, istio, kserve, nginx  # noqa: F401
