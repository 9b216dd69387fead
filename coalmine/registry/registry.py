"""Model registries by name (`COALMINE_REGISTRY=mlflow`); unknown or duplicate names raise."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from coalmine.registry.base import ModelRegistry

__all__ = ["REGISTRIES", "make_registry", "register_registry", "registry_from_env"]


def _mlflow(**options: Any) -> ModelRegistry:
    # imported here: the module is cheap, but building one imports mlflow (the extra)
    from coalmine.registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry(**options)


REGISTRIES: dict[str, Callable[..., ModelRegistry]] = {"mlflow": _mlflow}


def register_registry(name: str, factory: Callable[..., ModelRegistry]) -> None:
    if name in REGISTRIES:
        raise ValueError(f"model registry {name!r} is already registered")
    REGISTRIES[name] = factory


def make_registry(name: str, **options: Any) -> ModelRegistry:
    """A registry by its name; options go to its constructor (e.g. tracking_uri)."""
    try:
        factory = REGISTRIES[name]
    except KeyError:
        raise ValueError(
            f"unknown model registry {name!r}; known: {', '.join(sorted(REGISTRIES))}"
        ) from None
    return factory(**options)


def registry_from_env(environ: Mapping[str, str] | None = None) -> ModelRegistry | None:
    """The registry named by $COALMINE_REGISTRY (None when unset).

    Its own settings come from its usual variables (for MLflow: $MLFLOW_TRACKING_URI,
    $MLFLOW_REGISTRY_URI), so `coalmine serve` needs no registry section in its config.
    """
    env = os.environ if environ is None else environ
    name = env.get("COALMINE_REGISTRY", "").strip()
    return make_registry(name) if name else None
