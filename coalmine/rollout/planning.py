"""Warnings at rollout start: steps whose maximum duration cannot reach a decision.

Uses the analysis engine's planning math (`step_can_decide`, the same as `coalmine plan`)
with the traffic the model has actually seen recently. Pure except `observed_rates`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, select

from coalmine.rollout.spec import RolloutSpec
from coalmine.store.schema import feedback, predictions

__all__ = ["WINDOW_S", "observed_rates", "plan_warnings"]

WINDOW_S = 300.0
# (base success proportion, needs labels) of the proportion metrics the plan can size
_PROPORTIONS = {"accuracy": (0.9, True), "error_rate": (0.99, False)}
_SMALLEST_REGRESSION = 0.01  # one point beyond the criterion's margin


def observed_rates(engine: Engine, model: str, now: float | None = None) -> tuple[float, float]:
    """(requests per second served by `model`, labels per request) over the last 5 minutes."""
    since = (time.time() if now is None else now) - WINDOW_S
    served = select(func.count()).where(
        (predictions.c.model == model)
        & (predictions.c.ts >= since)
        & (predictions.c.role.in_(("stable", "canary")))
    )
    labelled = select(func.count()).where(feedback.c.ts >= since)
    with engine.connect() as conn:
        n = int(conn.execute(served).scalar() or 0)
        labels = int(conn.execute(labelled).scalar() or 0)
    return n / WINDOW_S, (min(1.0, labels / n) if n else 0.0)


def plan_warnings(
    spec: RolloutSpec, criteria: list[Any], *, rps: float, label_rate: float
) -> list[str]:
    """One sentence per canary step that cannot decide within its max duration."""
    from coalmine.analysis.plan import step_can_decide

    if rps <= 0:
        return [
            "no traffic seen in the last 5 minutes: steps will wait for their minimum samples "
            "and the plan cannot be checked"
        ]
    sized = [c for c in criteria if c.metric in _PROPORTIONS]
    warnings: list[str] = []
    for step in spec.canary.steps:
        if step.weight >= 100:
            continue
        warnings.extend(_quantile_warnings(spec, criteria, step, rps))
        for c in sized:
            base, needs_labels = _PROPORTIONS[c.metric]
            rate = label_rate if needs_labels else 1.0
            if rate <= 0:
                warnings.append(
                    f"step {step.weight:g}%: {c.name} needs labels and none "
                    "arrived in the last 5 minutes"
                )
                continue
            margin = c.margin or 0.0
            plan = step_can_decide(
                share_percent=step.weight,
                rps=rps,
                label_rate=rate,
                min_effect=margin + _SMALLEST_REGRESSION,
                base=base,
                margin=margin,
                alpha=spec.alpha,
                tests=max(1, len(criteria)),
                max_duration_s=spec.canary.step_max_duration(step),
                like_for_like=spec.baseline is not None,
            )
            text = plan.warning()
            if text:
                warnings.append(f"{c.name}: {text}")
    return warnings


def _quantile_warnings(spec: RolloutSpec, criteria: list[Any], step: Any, rps: float) -> list[str]:
    """Latency quantile criteria whose bound cannot become finite within the step.

    The quantile CS has no finite upper bound before `quantile_min_samples` calls (≈ 570 for
    p95, ≈ 3,000 for p99 at α = 0.05): until then the criterion can neither PASS nor FAIL,
    so a shorter step advances on not_fail alone.
    """
    from coalmine.analysis.sequential import quantile_min_samples

    out = []
    seen = rps * step.weight / 100 * spec.canary.step_max_duration(step)
    for c in criteria:
        p = c.spec.quantile
        if p is None:
            continue
        # the judge splits α over the criteria, and a ratio over the two arms
        arms = 2 if c.max_ratio is not None else 1
        need = quantile_min_samples(p, spec.alpha / (arms * max(1, len(criteria))))
        if seen < need:
            out.append(
                f"{c.name}: step {step.weight:g}%: its confidence bound stays infinite until "
                f"≈{need:,} candidate calls, and at {rps:.0f} req/s the step sees ≈{seen:,.0f} "
                "within its max duration: it cannot FAIL or PASS there, only not fail"
            )
    return out
