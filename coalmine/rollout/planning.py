"""Checks at rollout start: criteria with no data source, steps that cannot decide.

Uses the analysis engine's planning math (`step_can_decide`, the same as `coalmine plan`)
with the traffic the model has actually seen recently, and the one "no data" rule
(analysis/nodata.py) for each criterion's source. Pure except `observed_rates` and
`observed_sources`, which read the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Engine, func, select

from coalmine.analysis.nodata import SourceFacts, needs_labels, source_problem
from coalmine.rollout.floor import schedule
from coalmine.rollout.spec import RolloutSpec
from coalmine.store.schema import feedback, predictions

__all__ = [
    "WINDOW_S",
    "ObservedTraffic",
    "observed_rates",
    "observed_sources",
    "plan_warnings",
    "source_checks",
]

# How far back the source check looks: enough rows to have seen a label or a score if the
# model gets any, bounded so a start costs the same on a log of any size.
_RECENT_FEEDBACK = 5000
_RECENT_PREDICTIONS = 500

WINDOW_S = 300.0
# Below this, a rate says nothing: the plan is not checked, and the warning says so.
MIN_CALLS_TO_PLAN = 30
MIN_SECONDS_TO_PLAN = 10.0
# base success proportion of the proportion metrics the plan can size
_PROPORTIONS = {"accuracy": 0.9, "error_rate": 0.99}
_SMALLEST_REGRESSION = 0.01  # one point beyond the criterion's margin


@dataclass(frozen=True)
class ObservedTraffic:
    """What the model served in the last `WINDOW_S` seconds, over the span it was seen.

    `rps` is calls / the time between the window's first call and now (not / the window), so
    traffic that started a minute ago is not diluted over five; `label_rate` is the share of
    THIS model's calls that got a label (feedback for other models does not count).
    """

    calls: int
    seen_s: float
    labelled: int

    @property
    def rps(self) -> float:
        return self.calls / self.seen_s if self.seen_s > 0 else 0.0

    @property
    def label_rate(self) -> float:
        return min(1.0, self.labelled / self.calls) if self.calls else 0.0

    @property
    def enough(self) -> bool:
        return self.calls >= MIN_CALLS_TO_PLAN and self.seen_s >= MIN_SECONDS_TO_PLAN


def observed_rates(engine: Engine, model: str, now: float | None = None) -> ObservedTraffic:
    """Calls `model` served (stable or canary) and how many of them got a label, lately."""
    now = time.time() if now is None else now
    since = now - WINDOW_S
    mine = (
        (predictions.c.model == model)
        & (predictions.c.ts >= since)
        & (predictions.c.role.in_(("stable", "canary")))
    )
    # calls, not rows: a sampled stable row stands for 1/rate calls (logging.
    # stable_sample_rate), and its labels for as many labelled calls
    weight = func.coalesce(predictions.c.sample_weight, 1.0)
    served = select(func.sum(weight), func.min(predictions.c.ts)).where(mine)
    has_label = (
        select(feedback.c.id)
        .where((feedback.c.request_id == predictions.c.request_id)
               & feedback.c.label.is_not(None) & (feedback.c.label != "null"))
        .exists()
    )  # fmt: skip
    labelled = select(func.sum(weight)).where(mine & has_label)
    with engine.connect() as conn:
        n, first = conn.execute(served).one()
        labels = round(conn.execute(labelled).scalar() or 0)
    n = round(n or 0)
    # the span traffic was seen: from the first call in the window (at least 1 s)
    seen = max(1.0, now - float(first)) if n else 0.0
    return ObservedTraffic(calls=n, seen_s=seen, labelled=labels)


def plan_warnings(
    spec: RolloutSpec,
    criteria: list[Any],
    *,
    rps: float,
    label_rate: float,
    traffic: ObservedTraffic | None = None,
) -> list[str]:
    """One sentence per canary step and criterion that cannot decide within its max duration.

    The words follow what the step does then (machine.py with the power floor of floor.py):
    a `must: pass` criterion or a not_fail one with a floor holds the step until its max
    duration, which then ends per `on_inconclusive`; a not_fail one without a floor lets the
    step advance without having been able to detect a regression.
    """
    from coalmine.analysis.plan import format_duration, step_can_decide

    if traffic is not None and not traffic.enough:
        if traffic.calls == 0:
            return [
                f"no traffic seen in the last {WINDOW_S / 60:g} minutes: steps will wait for "
                "their minimum samples and the plan cannot be checked"
            ]
        return [
            f"too little traffic seen to plan ({traffic.calls} calls over "
            f"{traffic.seen_s:.0f} s): the plan cannot be checked yet"
        ]
    if rps <= 0:
        return [
            "no traffic seen in the last 5 minutes: steps will wait for their minimum samples "
            "and the plan cannot be checked"
        ]
    floors = schedule(spec, criteria)
    ending = (
        "end per on_inconclusive "
        f"({'roll back' if spec.canary.on_inconclusive == 'fail' else 'hold and alert'})"
    )
    sized = [c for c in criteria if c.metric in _PROPORTIONS]
    warnings: list[str] = []
    for index, step in enumerate(spec.canary.steps):
        if step.weight >= 100:
            continue
        warnings.extend(_quantile_warnings(spec, criteria, step, rps))
        max_s = spec.canary.step_max_duration(step)
        for c in sized:
            labelled = needs_labels(c)
            rate = label_rate if labelled else 1.0
            what = "labelled candidate samples" if labelled else "candidate calls"
            # a paired canary judges label-fed criteria on the stable's copies of the
            # canary's requests; error rate stays on served calls, unpaired
            paired = spec.canary.paired and labelled
            if paired:
                what = "labelled canary requests paired with stable's answers"
            if rate <= 0:
                warnings.append(
                    f"{c.name}: step {step.weight:g}%: it needs labels and none of this "
                    "model's recent calls got one: the step holds until labels arrive"
                )
                continue
            margin = c.margin or 0.0
            floor = floors.get(c.name, (None,) * (index + 1))[index]
            as_good = False
            if c.must == "not_fail" and floor is not None:
                # ruling out a regression of `floor` for a candidate as good as production
                as_good = True
                effect, against, goal = (
                    floor,
                    0.0,
                    (f"ruling out a regression larger than {floor * 100:.3g} points"),
                )
            else:
                effect, against = margin + _SMALLEST_REGRESSION, margin
                goal = (
                    "deciding"
                    if c.must == "pass"
                    else (f"detecting a regression of {effect * 100:.3g} points")
                )
            plan_at = partial(
                step_can_decide,
                share_percent=step.weight,
                rps=rps,
                label_rate=rate,
                min_effect=effect,
                base=_PROPORTIONS[c.metric],
                margin=against,
                alpha=spec.alpha,
                tests=max(1, len(criteria)),
                max_duration_s=max_s,
                like_for_like=spec.baseline is not None,
                paired=paired,
                as_good=as_good,
            )
            plan = plan_at()
            if plan.can_decide:
                continue
            if paired:
                what += _paired_note(plan_at, effect, _PROPORTIONS[c.metric])
            then = (
                "it advances on not_fail without that (no FAIL could be seen there)"
                if c.must == "not_fail" and floor is None
                else f"so the step will hold to its max duration and {ending}"
            )
            warnings.append(
                f"{c.name}: step {step.weight:g}%: {goal} needs ~{plan.anytime_samples:,} "
                f"{what} ≈ {format_duration(plan.anytime_seconds)} at "
                f"{plan.samples_per_second:.3g}/s, more than its max duration "
                f"{format_duration(max_s)}; {then}"
            )
    return warnings


def _paired_note(plan_at: Callable[..., Any], effect: float, base: float) -> str:
    """How the paired wait was planned, and the disagreement under which the step decides.

    The share of requests on which exactly one version is right is unknown at start, so
    the plan takes the worst case (their errors never coincide); the note says below which
    share the step would decide in time (the wait grows with it), if any.
    """
    lo, hi = effect, min(1.0, 2 * (1 - base) + effect)
    if not plan_at(disagreement=lo).can_decide:
        return " (even if the versions' errors all coincided)"
    for _ in range(30):  # bisection: the wait grows with the disagreement
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if plan_at(disagreement=mid).can_decide else (lo, mid)
    return (
        f" (planned for the worst case, errors that never coincide; it decides in time if "
        f"exactly one version is right on at most {lo:.1%} of requests)"
    )


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
                f"≈{need:,} candidate calls, and at {rps:.3g} req/s the step sees ≈{seen:,.0f} "
                "within its max duration: it cannot FAIL or PASS there, only not fail"
            )
    return out


def _scored(prediction: str | None, task: str) -> bool:
    from coalmine.analysis.outputs import normalize

    try:
        value = json.loads(prediction) if prediction is not None else None
    except ValueError:
        return False
    return any(
        o is not None and (o.probs is not None or o.p1 is not None) for o in normalize(value, task)
    )


def observed_sources(
    engine: Engine, model: str, *, task: str = "classification", resources: bool = False
) -> SourceFacts:
    """What the store shows of `model`'s data: labels, outcome names, logged scores.

    Feedback counts for this model only (joined to its prediction rows by request id), over
    the most recent feedback rows. Scores: a recent logged prediction with its `scores`
    column set (the gateway stores the probabilities there), or whose parsed prediction itself
    carries probabilities. `resources` says whether a CPU/memory source is configured.
    """
    recent_fb = (
        select(feedback.c.request_id, feedback.c.label, feedback.c.outcomes)
        .order_by(feedback.c.id.desc())
        .limit(_RECENT_FEEDBACK)
        .subquery()
    )
    fb = select(recent_fb.c.label, recent_fb.c.outcomes).where(
        select(predictions.c.id)
        .where(
            (predictions.c.request_id == recent_fb.c.request_id) & (predictions.c.model == model)
        )
        .exists()
    )
    score_col = next((predictions.c[k] for k in ("scores", "score") if k in predictions.c), None)
    recent_pred = (
        select(predictions.c.prediction, *([score_col] if score_col is not None else []))
        .where(predictions.c.model == model)
        .order_by(predictions.c.id.desc())
        .limit(_RECENT_PREDICTIONS)
    )
    labels = False
    outcomes: set[str] = set()
    scores = False
    with engine.connect() as conn:
        for label, raw_outcomes in conn.execute(fb):
            labels = labels or (label is not None and label != "null")
            try:
                parsed = json.loads(raw_outcomes) if raw_outcomes else None
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                outcomes.update(str(k) for k in parsed)
        for row in conn.execute(recent_pred):
            if (score_col is not None and row[1] is not None) or _scored(row[0], task):
                scores = True
                break
    return SourceFacts(
        labels=labels, outcomes=frozenset(outcomes), scores=scores, resources=resources
    )


def source_checks(
    spec: RolloutSpec, criteria: dict[str, list[Any]], facts: SourceFacts
) -> tuple[list[tuple[str, str]], list[str]]:
    """(refusals as (field path, reason), warnings) for every criterion's data source.

    `criteria` maps mode -> the built criteria of that mode (judge.build_criteria). The
    path names the criterion in the spec, or the mode's defaults when the spec gave none.
    """
    refusals: list[tuple[str, str]] = []
    warnings: list[str] = []
    for mode, built in criteria.items():
        given = spec.shadow.criteria if mode == "shadow" else spec.canary.criteria
        if mode == "shadow" and not spec.shadow.enabled:
            continue
        for i, c in enumerate(built):
            problem = source_problem(c, facts)
            if problem is None:
                continue
            if problem.action == "refuse":
                path = f"{mode}.criteria.{i}" if given is not None else f"{mode}.criteria"
                refusals.append((path, f"{c.metric}: {problem.reason}"))
            else:
                warnings.append(f"{mode}: {problem.sentence()}")
    return refusals, warnings
