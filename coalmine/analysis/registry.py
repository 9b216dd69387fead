"""The metrics a criterion may name: what each measures, its direction and its defaults.

A registry in the project's sense: `spec(name)` maps a configured name to its description
and raises on an unknown one; nothing falls back silently. Two families are open-ended:
`outcome:<name>` (a business outcome reported with the feedback) and `user:<name>` (a
per-example metric the operator allow-listed: see user_metrics.py; a criterion names it,
it never chooses code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from coalmine.analysis import user_metrics

Family = Literal[
    "error", "latency_mean", "latency_quantile", "quality", "auc", "agreement", "drift",
    "outcome", "resource", "user",
]  # fmt: skip

# `agreement` / `mean_abs_diff` with `margin` are judged against the noise floor: the
# candidate's agreement with production vs a fresh baseline's (same version as production)
# on the same requests; `min` / `max` are absolute limits on the candidate's own.

# Every metric is a number per example (or per request) whose mean is compared, except the
# quantiles (histograms), AUC (batch AUCs) and drift (binned distributions).


@dataclass(frozen=True)
class MetricSpec:
    name: str
    family: Family
    higher_is_better: bool
    unit: Literal["pts", "ms", "", "%", "MB"]  # "pts": a proportion shown as ×100 points
    needs_labels: bool = False
    modes: tuple[str, ...] = ("shadow", "canary")
    quantile: float | None = None
    tasks: tuple[str, ...] = ("classification", "regression")
    defaults: dict[str, float] = field(default_factory=dict)
    # which thresholds make sense for this metric
    allows: frozenset[str] = frozenset({"margin", "max_ratio", "max", "min"})
    key: str = ""  # the accumulator that feeds it (metrics.py)


_DIFF = frozenset({"margin", "max_ratio", "max", "min"})
_LIMIT = frozenset({"max", "min"})

METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("error_rate", "error", False, "pts", defaults={"margin": 0.005}, key="error"),
        MetricSpec("latency_mean", "latency_mean", False, "ms",
                   defaults={"max_ratio": 1.2}, key="latency"),
        MetricSpec("latency_p50", "latency_quantile", False, "ms", quantile=0.50,
                   defaults={"max_ratio": 1.2}, allows=frozenset({"max_ratio", "max"})),
        MetricSpec("latency_p95", "latency_quantile", False, "ms", quantile=0.95,
                   defaults={"max_ratio": 1.2}, allows=frozenset({"max_ratio", "max"})),
        MetricSpec("latency_p99", "latency_quantile", False, "ms", quantile=0.99,
                   defaults={"max_ratio": 1.2}, allows=frozenset({"max_ratio", "max"})),
        MetricSpec("accuracy", "quality", True, "pts", needs_labels=True,
                   tasks=("classification",), defaults={"margin": 0.01},
                   allows=frozenset({"margin", "min"}), key="accuracy"),
        MetricSpec("log_loss", "quality", False, "", needs_labels=True,
                   tasks=("classification",), defaults={"margin": 0.02}, key="log_loss"),
        MetricSpec("auc", "auc", True, "", needs_labels=True, tasks=("classification",),
                   defaults={"margin": 0.01}, allows=frozenset({"margin", "min"}), key="auc"),
        MetricSpec("mae", "quality", False, "", needs_labels=True, tasks=("regression",),
                   defaults={"max_ratio": 1.05}, key="abs_err"),
        MetricSpec("rmse", "quality", False, "", needs_labels=True, tasks=("regression",),
                   defaults={"max_ratio": 1.05}, key="sq_err"),
        MetricSpec("agreement", "agreement", True, "pts", modes=("shadow",),
                   tasks=("classification",), defaults={"min": 0.95},
                   allows=frozenset({"min", "margin"}), key="agree"),
        MetricSpec("mean_abs_diff", "agreement", False, "", modes=("shadow",),
                   tasks=("regression",), allows=frozenset({"max", "margin"}), key="abs_diff"),
        MetricSpec("psi", "drift", False, "", defaults={"max": 0.25},
                   allows=frozenset({"max"}), key="drift"),
        MetricSpec("js", "drift", False, "", defaults={"max": 0.1},
                   allows=frozenset({"max"}), key="drift"),
        # CPU time per request served, per window (analysis/resources.py)
        MetricSpec("cpu", "resource", False, "ms", defaults={"max_ratio": 1.25}, key="cpu"),
        MetricSpec("memory", "resource", False, "MB", defaults={"max_ratio": 1.25},
                   key="memory"),
    )
}  # fmt: skip

_OUTCOME = re.compile(r"^outcome:([A-Za-z0-9_.-]{1,64})$")
_USER = re.compile(r"^user:([A-Za-z0-9][A-Za-z0-9._-]{0,62})$")

UserMetric = user_metrics.UserMetric


class UnknownMetric(ValueError):
    pass


def known_names() -> str:
    users = ", ".join(f"user:{n}" for n in user_metrics.available()) or "none allow-listed"
    return ", ".join([*METRICS, "outcome:<name>", f"user:<name> ({users})"])


def spec(name: str) -> MetricSpec:
    """The description of metric `name`; raises UnknownMetric with the list of known names."""
    if name in METRICS:
        return METRICS[name]
    if m := _OUTCOME.match(name):
        # Business outcomes come with the feedback of served requests, so the canary only:
        # a shadow's answer never reaches the user and cannot cause an outcome.
        return MetricSpec(name, "outcome", True, "", modes=("canary",), allows=_DIFF,
                          key=f"outcome:{m.group(1)}")  # fmt: skip
    if _USER.match(name):
        return MetricSpec(name, "user", True, "", needs_labels=True, allows=_DIFF, key=name)
    if name.startswith("user:"):  # e.g. the module:function form, which never chose code
        raise UnknownMetric(user_metrics.refusal(name.removeprefix("user:")))
    raise UnknownMetric(f"unknown metric {name!r}; known: {known_names()}")


def outcome_name(metric: str) -> str | None:
    m = _OUTCOME.match(metric)
    return m.group(1) if m else None


def load_user_metric(name: str) -> UserMetric:
    """The allow-listed function of criterion metric `user:<name>`: f(prediction, label).

    Only a lookup: nothing is imported here, whatever `name` says.
    """
    m = _USER.match(name)
    if not m:
        raise UnknownMetric(user_metrics.refusal(name.removeprefix("user:")))
    try:
        return user_metrics.lookup(m.group(1))
    except user_metrics.UserMetricError as exc:
        raise UnknownMetric(str(exc)) from None
