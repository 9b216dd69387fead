"""Traffic providers: make a traffic layer hold the store's route (see base.py)."""

from coalmine.providers.base import ProviderError, TrafficProvider
from coalmine.providers.registry import build, names, register

__all__ = ["ProviderError", "TrafficProvider", "build", "names", "register"]
