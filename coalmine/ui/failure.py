"""The material for the offline failure analysis of a rolled-back candidate.

Which criteria and slices failed, and the logged requests that show it: for shadow traffic
the requests (paired by request_id) on which candidate and production disagreed most, for
canary traffic the candidate's predictions in the failing slice that the labels say were
wrong — each with its input (as far as the logging policy kept it) and its label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, select
from sqlalchemy.orm import aliased

from coalmine.store.schema import feedback, predictions
from coalmine.ui.series import disagreement, parsed, point_of_json, point_value

__all__ = [
    "Example",
    "FailureAnalysis",
    "SliceErrors",
    "analyse_failure",
    "matches_slice",
    "parse_slice",
]

SCAN_LIMIT = 20_000  # newest logged calls examined per kind
SHOWN = 25  # examples kept per kind
_OVERALL = frozenset({"", "overall", "all", "*", "none", "global"})


@dataclass
class Example:
    request_id: str
    ts: float
    kind: str  # shadow | canary
    candidate: Any
    production: Any  # the production prediction on the same request (shadow only)
    label: Any  # ground truth, None when no feedback arrived
    input: str | None  # as logged; None when the policy kept nothing
    slices: dict[str, Any]
    gap: float  # |candidate − production| (shadow) or |candidate − label| (canary); 1 = differ
    candidate_wrong: bool | None
    production_wrong: bool | None


@dataclass
class SliceErrors:
    slice: str
    candidate_labelled: int = 0
    candidate_wrong: int = 0
    production_labelled: int = 0
    production_wrong: int = 0


@dataclass
class FailureAnalysis:
    reason: str | None
    failing: list[dict[str, Any]]  # the criterion results whose verdict is fail
    failing_slices: list[str]
    shadow: list[Example] = field(default_factory=list)
    shadow_disagreements: int = 0
    shadow_pairs: int = 0
    canary: list[Example] = field(default_factory=list)
    canary_errors: SliceErrors | None = None


def parse_slice(value: Any) -> dict[str, str] | None:
    """A slice as attribute → value; None for the whole traffic ("overall")."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()} or None
    text = str(value or "").strip()
    if text.lower() in _OVERALL:
        return None
    out: dict[str, str] = {}
    for part in text.replace("&", ",").split(","):
        for sep in ("=", ":"):
            if sep in part:
                key, _, val = part.partition(sep)
                out[key.strip()] = val.strip()
                break
    return out or None


def matches_slice(slices: dict[str, Any], wanted: dict[str, str] | None) -> bool:
    if not wanted:
        return True
    return all(str(slices.get(k)) == v for k, v in wanted.items())


def _is_fail(result: dict[str, Any]) -> bool:
    return str(result.get("verdict", "")).lower() in ("fail", "failed", "failure")


def _latest_labels(conn: Connection, request_ids: list[str]) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i : i + 500]
        stmt = (
            select(feedback.c.request_id, feedback.c.label)
            .where(feedback.c.request_id.in_(chunk), feedback.c.label.is_not(None))
            .order_by(feedback.c.id)
        )
        for rid, label in conn.execute(stmt):
            labels[rid] = point_of_json(label)  # later rows overwrite: the newest label wins
    return labels


def _inputs(conn: Connection, model: str, request_ids: list[str]) -> dict[str, str | None]:
    if not request_ids:
        return {}
    stmt = select(predictions.c.request_id, predictions.c.input, predictions.c.role).where(
        predictions.c.model == model, predictions.c.request_id.in_(request_ids)
    )
    out: dict[str, str | None] = {}
    for rid, text, role in conn.execute(stmt):
        if text is not None and (out.get(rid) is None or role == "stable"):
            out[rid] = text
    return out


def _wrong(prediction: Any, label: Any) -> bool | None:
    if label is None:
        return None
    return disagreement(prediction, label) > 0


def _shadow_examples(
    conn: Connection, rollout: dict[str, Any], wanted: list[dict[str, str] | None], start: float,
    end: float, analysis: FailureAnalysis,
) -> None:  # fmt: skip
    cand = aliased(predictions)
    prod = aliased(predictions)
    stmt = (
        select(cand.c.request_id, cand.c.ts, cand.c.prediction, prod.c.prediction, prod.c.slices)
        .join(prod, and_(prod.c.request_id == cand.c.request_id, prod.c.model == cand.c.model))
        .where(
            cand.c.model == rollout["model"],
            cand.c.version == rollout["candidate"],
            cand.c.role == "shadow",
            prod.c.role == "stable",
            cand.c.status == 200,
            prod.c.status == 200,
            cand.c.ts >= start,
            cand.c.ts <= end,
        )
        .order_by(cand.c.id.desc())
        .limit(SCAN_LIMIT)
    )
    rows = list(conn.execute(stmt))
    analysis.shadow_pairs = len(rows)
    differing = []
    for rid, ts, c_text, p_text, s_text in rows:
        c, p = point_of_json(c_text), point_of_json(p_text)
        gap = disagreement(c, p)
        if gap > 0:
            differing.append((rid, ts, c, p, parsed(s_text) or {}, gap))
    analysis.shadow_disagreements = len(differing)
    labels = _latest_labels(conn, [d[0] for d in differing])

    def rank(item: tuple[Any, ...]) -> tuple[int, int, float, float]:
        rid, ts, c, p, slices, gap = item
        in_slice = any(matches_slice(slices, w) for w in wanted if w) if any(wanted) else True
        label = labels.get(rid)
        worse = _wrong(c, label) is True and _wrong(p, label) is False
        return (int(in_slice), int(worse), gap, ts)

    top = sorted(differing, key=rank, reverse=True)[:SHOWN]
    inputs = _inputs(conn, rollout["model"], [t[0] for t in top])
    for rid, ts, c, p, slices, gap in top:
        label = labels.get(rid)
        analysis.shadow.append(
            Example(
                request_id=rid,
                ts=ts,
                kind="shadow",
                candidate=point_value(c),
                production=point_value(p),
                label=None if label is None else point_value(label),
                input=inputs.get(rid),
                slices=slices,
                gap=gap,
                candidate_wrong=_wrong(c, label),
                production_wrong=_wrong(p, label),
            )
        )


def _labelled(
    conn: Connection, rollout: dict[str, Any], version: str, role: str, start: float, end: float
) -> list[tuple[str, float, Any, dict[str, Any], Any]]:
    stmt = (
        select(
            predictions.c.request_id,
            predictions.c.ts,
            predictions.c.prediction,
            predictions.c.slices,
            feedback.c.label,
        )
        .join(feedback, feedback.c.request_id == predictions.c.request_id)
        .where(
            predictions.c.model == rollout["model"],
            predictions.c.version == version,
            predictions.c.role == role,
            predictions.c.status == 200,
            predictions.c.ts >= start,
            predictions.c.ts <= end,
            feedback.c.label.is_not(None),
        )
        .order_by(predictions.c.id.desc(), feedback.c.id.desc())
        .limit(SCAN_LIMIT)
    )
    seen: set[str] = set()
    out = []
    for rid, ts, p_text, s_text, l_text in conn.execute(stmt):
        if rid in seen:  # several feedback rows: the newest (first here) wins
            continue
        seen.add(rid)
        out.append((rid, ts, point_of_json(p_text), parsed(s_text) or {}, point_of_json(l_text)))
    return out


def _canary_examples(
    conn: Connection, rollout: dict[str, Any], wanted: dict[str, str] | None, slice_name: str,
    start: float, end: float, analysis: FailureAnalysis,
) -> None:  # fmt: skip
    errors = SliceErrors(slice=slice_name)
    wrong = []
    for rid, ts, pred, slices, label in _labelled(
        conn, rollout, rollout["candidate"], "canary", start, end
    ):
        if not matches_slice(slices, wanted):
            continue
        errors.candidate_labelled += 1
        gap = disagreement(pred, label)
        if gap > 0:
            errors.candidate_wrong += 1
            wrong.append((rid, ts, pred, slices, label, gap))
    for _rid, _ts, pred, slices, label in _labelled(
        conn, rollout, rollout["previous_stable"], "stable", start, end
    ):
        if matches_slice(slices, wanted):
            errors.production_labelled += 1
            errors.production_wrong += int(disagreement(pred, label) > 0)
    if not errors.candidate_labelled:
        return
    analysis.canary_errors = errors
    top = sorted(wrong, key=lambda w: (w[5], w[1]), reverse=True)[:SHOWN]
    inputs = _inputs(conn, rollout["model"], [t[0] for t in top])
    for rid, ts, pred, slices, label, gap in top:
        analysis.canary.append(
            Example(
                request_id=rid,
                ts=ts,
                kind="canary",
                candidate=point_value(pred),
                production=None,
                label=point_value(label),
                input=inputs.get(rid),
                slices=slices,
                gap=gap,
                candidate_wrong=True,
                production_wrong=None,
            )
        )


def analyse_failure(
    conn: Connection,
    rollout: dict[str, Any],
    criteria: list[dict[str, Any]],
    start: float,
    end: float,
) -> FailureAnalysis:
    failing = [c for c in criteria if _is_fail(c)]
    slice_names = []
    for c in failing:
        name = str(c.get("slice") or "overall")
        if name not in slice_names:
            slice_names.append(name)
    # a slice-level failure is the sharper lead; the overall one is the fallback
    slice_names.sort(key=lambda s: parse_slice(s) is None)
    analysis = FailureAnalysis(
        reason=rollout.get("reason"), failing=failing, failing_slices=slice_names
    )
    wanted = [parse_slice(s) for s in slice_names]
    _shadow_examples(conn, rollout, wanted, start, end, analysis)
    focus = slice_names[0] if slice_names else "overall"
    _canary_examples(conn, rollout, parse_slice(focus), focus, start, end, analysis)
    return analysis
