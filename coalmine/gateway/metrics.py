"""The gateway's Prometheus metrics, on the default registry (served at /metrics).

Per-call metrics (requests, errors, latency by model, version and role) are plain integers
and floats updated on the event loop and turned into Prometheus families only when scraped:
observing a call costs a bisect and two additions instead of prometheus-client's locks, so
instrumentation stays cheap on the request path. The rarer events use ordinary metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "RoleMetrics", "role_metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

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
BASELINE_FAILOVERS = Counter(
    "coalmine_gateway_baseline_failovers",
    "Baseline calls (connection, timeout, 5xx) answered by stable instead",
    ["model"],
)


class RoleMetrics:
    """Calls to one (model, version, role): count, errors by class, latency histogram."""

    __slots__ = ("buckets", "count", "errors", "labels", "total_s")

    def __init__(self, model: str, version: str, role: str) -> None:
        self.labels = (model, version, role)
        self.count = 0
        self.total_s = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.errors: dict[str, int] = {}

    def observe(self, seconds: float, error_class: str | None) -> None:
        self.count += 1
        self.total_s += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        if error_class is not None and error_class != "http_4xx":
            self.errors[error_class] = self.errors.get(error_class, 0) + 1


_ROLES: dict[tuple[str, str, str], RoleMetrics] = {}


def role_metrics(model: str, version: str, role: str) -> RoleMetrics:
    key = (model, version, role)
    found = _ROLES.get(key)
    if found is None:
        found = _ROLES[key] = RoleMetrics(model, version, role)
    return found


class _RoleCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version", "role"]
        requests = CounterMetricFamily(
            "coalmine_gateway_requests", "Upstream calls by model, version and role", labels=labels
        )
        errors = CounterMetricFamily(
            "coalmine_gateway_errors",
            "Failed upstream calls (connection, timeout, 5xx) by model, version, role and class",
            labels=[*labels, "error_class"],
        )
        latency = HistogramMetricFamily(
            "coalmine_gateway_latency_seconds",
            "Upstream call latency by model, version and role",
            labels=labels,
        )
        for metrics in list(_ROLES.values()):
            values = list(metrics.labels)
            requests.add_metric(values, metrics.count)
            for error_class, n in list(metrics.errors.items()):
                errors.add_metric([*values, error_class], n)
            cumulative, rows = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), metrics.buckets, strict=True):
                cumulative += n
                rows.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric(values, rows, metrics.total_s)
        yield requests
        yield errors
        yield latency


REGISTRY.register(_RoleCollector())
