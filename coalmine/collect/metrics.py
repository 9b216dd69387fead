"""Prometheus counters of the collectors (served on the control API's /api/v1/metrics)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["EVENTS", "ROWS"]

EVENTS = Counter(
    "coalmine_collect_events_total",
    "Events a collector received, by source and outcome (paired, waiting, expired, "
    "evicted, repeated, ignored, unknown_service, unrouted, invalid)",
    ["source", "outcome"],
)
ROWS = Counter(
    "coalmine_collect_rows_total",
    "Prediction-log rows a collector wrote (written) or skipped as already logged "
    "(duplicate), by source",
    ["source", "outcome"],
)
