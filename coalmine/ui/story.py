"""Read everything the dashboard and the report tell about one rollout from the store.

`load_story` is the only I/O: a handful of SELECTs. Reductions are in `series.py`, the
failure analysis material in `failure.py`, the drawing in `charts.py`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select
from sqlalchemy.orm import aliased

from coalmine.store.schema import predictions, rollout_events, rollouts, routes
from coalmine.ui.failure import FailureAnalysis, analyse_failure
from coalmine.ui.scales import Scale, clipped_result, criterion_kinds, scale_of
from coalmine.ui.series import (
    Call,
    Series,
    agrees,
    bucket_width,
    class_distribution,
    is_error,
    latency_error_series,
    point_of_json,
    rate_series,
    resource_series,
    share_series,
    totals,
)
from coalmine.ui.snapshots import Snapshot, read_snapshots

__all__ = [
    "ENDED_PHASES",
    "RolloutNotFound",
    "Story",
    "criteria_of",
    "find_rollout_id",
    "list_models",
    "list_rollouts",
    "load_story",
]

ENDED_PHASES = frozenset({"promoted", "rolled_back", "aborted", "completed"})
# Enough calls for smooth charts; beyond it every k-th row is read (by id, so unbiased).
MAX_CALLS = 100_000
MAX_PAIRS = 20_000


class RolloutNotFound(LookupError):
    """No rollout with that id (or no rollout at all of that model)."""


@dataclass
class Story:
    rollout: dict[str, Any]
    events: list[dict[str, Any]]
    snapshots: list[Snapshot]
    route: dict[str, Any] | None
    start: float
    end: float
    width: float
    latency: dict[str, dict[str, Series]] = field(default_factory=dict)
    # per version: CPU ms per request and peak resident MB per resource window
    resources: dict[str, dict[str, Series]] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    candidate_share: Series | None = None
    mirrored_share: Series | None = None
    agreement: Series | None = None
    agreement_total: tuple[int, int] = (0, 0)  # (agreeing, paired)
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)
    failure: FailureAnalysis | None = None
    generated_at: float = 0.0
    sampled_every: int = 1
    awaiting_approval: float | None = None  # the weight (%) of a step waiting for a person

    @property
    def against(self) -> str:
        """What the candidate is compared with: a fresh baseline, or production."""
        spec = self.rollout.get("spec")
        return "baseline" if isinstance(spec, dict) and spec.get("baseline") else "production"

    def scale(self, result: dict[str, Any]) -> Scale:
        return scale_of(result, criterion_kinds(self.rollout.get("spec")), self.against)

    def scaled(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`results` with bounds clipped to each metric's range and their scale named."""
        return [clipped_result(r, self.scale(r)) for r in results]

    @property
    def startup_warnings(self) -> list[str]:
        """The planner's warnings, recorded in the `created` event's reason."""
        for event in self.events:
            if event["kind"] == "created":
                parts = str(event.get("reason") or "").split("; warning: ")
                return [p for p in parts[1:] if p]
        return []

    @property
    def judgement(self) -> dict[str, Any] | None:
        """The newest judgement: the last snapshot, else the rollout's last_judgement."""
        if self.snapshots:
            return self.snapshots[-1].judgement
        last = self.rollout.get("last_judgement")
        return last if isinstance(last, dict) else None

    @property
    def decisive_judgement(self) -> dict[str, Any] | None:
        """The judgement of the transition that ended (or is ending) the rollout."""
        for event in reversed(self.events):
            if event["to_phase"] in ("rolling_back", "rolled_back", "paused") and isinstance(
                event.get("judgement"), dict
            ):
                return dict(event["judgement"])
        return self.judgement

    @property
    def ended(self) -> bool:
        return self.rollout["phase"] in ENDED_PHASES

    def role_of(self, version: str) -> str:
        """The version's part: the candidate, or production (the stable version)."""
        return "candidate" if version == self.rollout.get("candidate") else "production"


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def criteria_of(judgement: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The per-criterion, per-slice results of a `Judgement.to_dict()`."""
    if not judgement:
        return []
    for key in ("criteria", "results", "criterion_results"):
        value = judgement.get(key)
        if isinstance(value, list):
            return [c for c in value if isinstance(c, dict)]
    return []


def _rollout_row(conn: Connection, rollout_id: int) -> dict[str, Any]:
    row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).mappings().first()
    if row is None:
        raise RolloutNotFound(f"no rollout with id {rollout_id}")
    out = dict(row)
    out["spec"] = _loads(out["spec"])
    out["last_judgement"] = _loads(out["last_judgement"])
    return out


def find_rollout_id(engine: Engine, ref: str) -> int:
    """A rollout id from `ref`: a number, or a model name meaning its newest rollout."""
    if ref.isascii() and ref.isdigit():
        return int(ref)
    with engine.connect() as conn:
        found = conn.execute(
            select(func.max(rollouts.c.id)).where(rollouts.c.model == ref)
        ).scalar()
    if found is None:
        raise RolloutNotFound(f"no rollout id or model named {ref!r}")
    return int(found)


def list_rollouts(engine: Engine, limit: int = 100) -> list[dict[str, Any]]:
    cols = [
        rollouts.c.id,
        rollouts.c.model,
        rollouts.c.candidate,
        rollouts.c.previous_stable,
        rollouts.c.phase,
        rollouts.c.step_index,
        rollouts.c.canary_weight_bp,
        rollouts.c.mirror_bp,
        rollouts.c.started_at,
        rollouts.c.updated_at,
        rollouts.c.ended_at,
        rollouts.c.outcome,
        rollouts.c.reason,
    ]
    with engine.connect() as conn:
        rows = conn.execute(select(*cols).order_by(rollouts.c.id.desc()).limit(limit))
        return [dict(r) for r in rows.mappings()]


def list_models(engine: Engine) -> list[dict[str, Any]]:
    """Each model's live route (stable, canary, shadow, split) with its active rollout."""
    with engine.connect() as conn:
        rows = conn.execute(select(routes).order_by(routes.c.model)).mappings()
        return [dict(r) for r in rows]


def _events(conn: Connection, rollout_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(rollout_events)
        .where(rollout_events.c.rollout_id == rollout_id)
        .order_by(rollout_events.c.id)
    )
    out = []
    for row in conn.execute(stmt).mappings():
        event = dict(row)
        event["judgement"] = _loads(event["judgement"])
        out.append(event)
    return out


def _group(role: str, version: str, rollout: dict[str, Any]) -> str | None:
    if role == "baseline":
        return "baseline"
    if version == rollout["candidate"]:
        return "shadow" if role == "shadow" else "candidate"
    if role == "stable":
        return "production"
    return None


def _window(model: str, start: float, end: float) -> Any:
    return and_(predictions.c.model == model, predictions.c.ts >= start, predictions.c.ts <= end)


def _calls(conn: Connection, rollout: dict[str, Any], start: float, end: float) -> Any:
    where = _window(rollout["model"], start, end)
    total = conn.execute(select(func.count()).select_from(predictions).where(where)).scalar()
    every = max(1, -(-int(total or 0) // MAX_CALLS))
    if every > 1:
        where = and_(where, predictions.c.id % every == 0)
    stmt = select(
        predictions.c.ts,
        predictions.c.role,
        predictions.c.version,
        predictions.c.latency_ms,
        predictions.c.status,
        predictions.c.error_class,
        predictions.c.prediction,
        predictions.c.sample_weight,
    ).where(where)
    return conn.execute(stmt), every


def _shadow_pairs(
    conn: Connection, rollout: dict[str, Any], start: float, end: float
) -> list[tuple[float, str | None, str | None]]:
    """(ts, candidate prediction, production prediction) of mirrored requests."""
    cand = aliased(predictions)
    prod = aliased(predictions)
    stmt = (
        select(cand.c.ts, cand.c.prediction, prod.c.prediction)
        .join(prod, and_(prod.c.request_id == cand.c.request_id, prod.c.model == cand.c.model))
        .where(
            cand.c.model == rollout["model"],
            cand.c.version == rollout["candidate"],
            cand.c.role == "shadow",
            prod.c.role == "stable",
            cand.c.ts >= start,
            cand.c.ts <= end,
            cand.c.status == 200,
            prod.c.status == 200,
        )
        .order_by(cand.c.id.desc())
        .limit(MAX_PAIRS)
    )
    return [(r[0], r[1], r[2]) for r in conn.execute(stmt)]


def load_story(engine: Engine, rollout_id: int, *, now: float | None = None) -> Story:
    """Everything about one rollout, read in one short read transaction."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        rollout = _rollout_row(conn, rollout_id)
        events = _events(conn, rollout_id)
        snapshots = read_snapshots(conn, rollout_id)
        route = (
            conn.execute(select(routes).where(routes.c.model == rollout["model"]))
            .mappings()
            .first()
        )
        start = float(rollout["started_at"])
        end = float(rollout["ended_at"] or now)
        width = bucket_width(end - start)
        story = Story(
            rollout=rollout,
            events=events,
            snapshots=snapshots,
            route=dict(route) if route else None,
            start=start,
            end=end,
            width=width,
            generated_at=now,
        )
        judged = [(snap.ts, snap.judgement) for snap in snapshots] or [
            (e["ts"], e["judgement"]) for e in events if isinstance(e.get("judgement"), dict)
        ]
        story.resources = resource_series(judged)

        result, story.sampled_every = _calls(conn, rollout, start, end)
        calls: list[Call] = []
        preds: dict[str, list[Any]] = {}
        for ts, role, version, latency_ms, status, error_class, prediction, weight in result:
            group = _group(role, version, rollout)
            if group is None:
                continue
            error = is_error(status, error_class)
            calls.append(Call(ts, group, float(latency_ms), error, float(weight or 1.0)))
            if prediction is not None and status == 200:
                preds.setdefault(group, []).append(point_of_json(prediction))
        story.latency = latency_error_series(calls, start, width)
        story.totals = totals(calls)
        story.candidate_share = share_series(
            calls, start, width, part="candidate", whole=("candidate", "production", "baseline")
        )
        story.mirrored_share = share_series(
            calls, start, width, part="shadow", whole=("production",)
        )
        story.distributions = {g: class_distribution(p) for g, p in sorted(preds.items())}

        pairs = _shadow_pairs(conn, rollout, start, end)
        points = [(ts, agrees(point_of_json(c), point_of_json(p))) for ts, c, p in pairs]
        story.agreement = rate_series(points, start, width)
        story.agreement_total = (sum(1 for _, ok in points if ok), len(points))

        if rollout["phase"] in ("rolled_back", "rolling_back") or rollout["outcome"] in (
            "rolled_back",
            "aborted",
        ):
            story.failure = analyse_failure(
                conn, rollout, criteria_of(story.decisive_judgement), start, end
            )
    if not story.ended:
        story.awaiting_approval = awaiting_approval_of(engine, rollout_id)
    return story


def awaiting_approval_of(engine: Engine, rollout_id: int) -> float | None:
    """The weight (%) of the step waiting for a person's approval, if any (the controller's
    own reading, so the Approve button is enabled exactly when the API would accept it)."""
    from coalmine.rollout.machine import awaiting_approval
    from coalmine.rollout.store import RolloutRepository

    try:
        state = RolloutRepository(engine).get(rollout_id).state
    except (LookupError, ValueError):  # unknown, or a row this version cannot read
        return None
    gate = awaiting_approval(state)
    return None if gate is None else float(state.spec.step_weights[gate])
