"""The judge-only judgements as a Prometheus gauge, for Flagger's metric templates.

Flagger's metric templates query a metrics backend (Prometheus, Datadog, ...); none calls a
plain web endpoint. So Coalmine exports

    coalmine_judgement{model, candidate, baseline, mode, criterion}
        1 PASS, 0 INCONCLUSIVE, -1 FAIL; criterion="overall" is the step's verdict

on the control API's `/api/v1/metrics` and, alone, on `/api/v1/judge/metrics` (which the
read-only judge token opens, so Prometheus scrapes with it), for every judge-only question
a tool asked in the last 10 minutes (a Flagger webhook or an Argo measurement starts it),
judged again at scrape time when its last answer is older than 10 s. A template then reads
`min(coalmine_judgement{...criterion="overall"})` with `thresholdRange: {min: 0}` (not
failing); the webhooks' gates wait for PASS.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from coalmine.integrations.service import JudgeService

__all__ = ["JUDGE_REGISTRY", "VALUES", "register"]

VALUES = {"PASS": 1.0, "INCONCLUSIVE": 0.0, "FAIL": -1.0}
ASKED_WITHIN_S = 600.0
REFRESH_AFTER_S = 10.0

_services: weakref.WeakSet[JudgeService] = weakref.WeakSet()


class _JudgementCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "coalmine_judgement",
            "Judge-only verdict (1 PASS, 0 INCONCLUSIVE, -1 FAIL) per criterion and overall",
            labels=["model", "candidate", "baseline", "mode", "criterion"],
        )
        seen: set[tuple[str, ...]] = set()
        for service in list(_services):
            for a in service.recent(asked_within=ASKED_WITHIN_S, refresh_after=REFRESH_AFTER_S):
                head = [str(a["model"]), str(a["candidate"]), str(a["baseline"]), str(a["mode"])]
                rows = [("overall", a["verdict"])]
                rows += [(name, c.get("verdict")) for name, c in a["criteria"].items()]
                for criterion, verdict in rows:
                    labels = (*head, criterion)
                    if verdict in VALUES and labels not in seen:  # one series per label set
                        seen.add(labels)
                        g.add_metric(list(labels), VALUES[verdict])
        yield g

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # without it, registering would call collect() (and judge) at import time
        yield GaugeMetricFamily("coalmine_judgement", "", labels=[])


_collector = _JudgementCollector()
REGISTRY.register(_collector)  # the control API's /api/v1/metrics
# /api/v1/judge/metrics: this gauge alone, readable with the read-only judge token
JUDGE_REGISTRY = CollectorRegistry(auto_describe=True)
JUDGE_REGISTRY.register(_collector)


def register(service: JudgeService) -> None:
    """Export `service`'s judgements (held weakly: a discarded app stops exporting)."""
    _services.add(service)
