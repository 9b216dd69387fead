"""Keeps each model's traffic layer on the store's route: the controller's hook (I/O).

The controller calls `sync` after every tick and every operator command; a provider whose
layer already holds the route only reads it. A refusal (e.g. `nginx -t` failing) is logged
and retried after `retry_s`, not every tick: the layer keeps running what it had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Engine

from coalmine.config import CoalmineConfig
from coalmine.providers.base import TrafficProvider
from coalmine.providers.registry import build
from coalmine.store.routes import RouteRepository

__all__ = ["TrafficSync"]

log = logging.getLogger(__name__)


class TrafficSync:
    def __init__(
        self,
        engine: Engine,
        providers: Mapping[str, TrafficProvider[Any]],
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = RouteRepository(engine)
        self.providers = dict(providers)  # model -> its provider
        self.retry_s = retry_s
        self.clock = clock
        self._retry_at: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: CoalmineConfig, engine: Engine) -> TrafficSync:
        """The providers of the models routed outside Coalmine's gateway; `builtin` models
        need nothing (the gateway polls the store itself)."""
        return cls(
            engine,
            {m.name: build(m, engine) for m in config.models if m.traffic.provider != "builtin"},
        )

    async def sync(self, models: Iterable[str] | None = None) -> None:
        """Bring the layers of `models` (default: all) to their stored routes; never raises."""
        for model in list(self.providers if models is None else models):
            provider = self.providers.get(model)
            if provider is None or self.clock() < self._retry_at.get(model, 0.0):
                continue
            try:
                route = await asyncio.to_thread(self.routes.get, model)
                if route is None:
                    continue
                changes = await asyncio.to_thread(provider.sync, route)
            except Exception as exc:
                self._retry_at[model] = self.clock() + self.retry_s
                log.warning("%s: traffic provider %s failed: %s", model, provider.name, exc)
                continue
            self._retry_at.pop(model, None)
            if changes:
                log.info(
                    "%s: %s now holds route r%s: %s",
                    model,
                    provider.name,
                    route.revision,
                    "; ".join(changes)[:500],
                )
