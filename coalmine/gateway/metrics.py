"""The gateway's Prometheus metrics, on the default registry (served at /metrics).

Label children are cached per (model, version, role) so the request path does one dict
lookup instead of `labels()`'s lock and tuple building.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["RoleMetrics", "role_metrics"]

REQUESTS = Counter(
    "coalmine_gateway_requests",
    "Upstream calls by model, version and role",
    ["model", "version", "role"],
)
ERRORS = Counter(
    "coalmine_gateway_errors",
    "Upstream calls that failed (connection, timeout, 5xx) by model, version, role and class",
    ["model", "version", "role", "error_class"],
)
LATENCY = Histogram(
    "coalmine_gateway_latency_seconds",
    "Upstream call latency by model, version and role",
    ["model", "version", "role"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REJECTED = Counter(
    "coalmine_gateway_rejected", "Requests answered by the gateway itself", ["reason"]
)
SHADOW_DROPS = Counter(
    "coalmine_gateway_shadow_drops", "Mirror copies dropped because the queue was full", ["model"]
)
SHADOW_QUEUE = Gauge("coalmine_gateway_shadow_queue_depth", "Mirror copies waiting for a worker")
GUARD_TRIPS = Counter(
    "coalmine_gateway_guard_trips", "Fast-guard trips (canary routed away)", ["model", "version"]
)
FAILOVERS = Counter("coalmine_gateway_failovers", "Canary calls retried on stable", ["model"])


class RoleMetrics:
    """The metric children of one (model, version, role)."""

    __slots__ = ("_errors", "_labels", "latency", "requests")

    def __init__(self, model: str, version: str, role: str) -> None:
        self._labels = (model, version, role)
        self.requests = REQUESTS.labels(model, version, role)
        self.latency = LATENCY.labels(model, version, role)
        self._errors: dict[str, Counter] = {}

    def observe(self, seconds: float, error_class: str | None) -> None:
        self.requests.inc()
        self.latency.observe(seconds)
        if error_class is not None and error_class != "http_4xx":
            child = self._errors.get(error_class)
            if child is None:
                child = self._errors[error_class] = ERRORS.labels(*self._labels, error_class)
            child.inc()


_CACHE: dict[tuple[str, str, str], RoleMetrics] = {}


def role_metrics(model: str, version: str, role: str) -> RoleMetrics:
    key = (model, version, role)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = RoleMetrics(model, version, role)
    return found
