"""The traffic-provider contract: who enforces a model's route in the traffic layer.

The store's route (`RouteState`) says who serves a model; a provider makes the traffic layer
(Coalmine's own gateway, nginx, later a mesh) hold that split. Every provider works as
desired state -> diff -> apply, so applying is safe to repeat and cheap when nothing changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from coalmine.routing.state import RouteState

__all__ = ["ProviderError", "TrafficProvider"]

Desired = TypeVar("Desired")


class ProviderError(Exception):
    """The traffic layer refused or could not take a route; what it ran before still runs."""


class TrafficProvider(ABC, Generic[Desired]):
    """One model's traffic layer. `Desired` is the provider's own picture of a route."""

    name: ClassVar[str]

    @abstractmethod
    def render(self, route: RouteState) -> Desired:
        """Pure: what the traffic layer must hold for `route`; same route, equal result."""

    @abstractmethod
    def read(self) -> Desired | None:
        """What the traffic layer holds now (None: nothing of ours yet); changes nothing."""

    @abstractmethod
    def diff(self, desired: Desired, current: Desired | None) -> list[str]:
        """Pure: one line per difference, empty when `current` already is `desired`."""

    @abstractmethod
    def apply(self, desired: Desired) -> None:
        """Make the traffic layer hold `desired`; idempotent; raises ProviderError and
        leaves the running state untouched when the layer refuses it."""

    def sync(self, route: RouteState) -> list[str]:
        """Render, read, diff and apply only when they differ; returns the differences
        applied (empty: nothing was touched, so a repeat costs one read)."""
        desired = self.render(route)
        changes = self.diff(desired, self.read())
        if changes:
            self.apply(desired)
        return changes
