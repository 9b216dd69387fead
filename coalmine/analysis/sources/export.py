"""Run an Analysis over an exported prediction log (CSV or Parquet).

Columns are those of the `predictions` table (request_id, model, version, role, ts,
latency_ms, status, error_class, prediction, slices, canary_weight_bp, ...) plus `label`
(and optionally `outcomes`); JSON columns hold JSON text. Missing optional columns are fine.
Candidate rows: version == candidate with role canary or shadow; production rows: version
== baseline with role stable (any role when the log has no role column). Rows of role
"baseline" (a fresh instance of the stable version) follow the Evaluator's rule: a canary is
judged against them instead of production; in a shadow they give the noise floor.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from coalmine.analysis import inputs
from coalmine.analysis.analysis import Analysis, check_labels
from coalmine.analysis.criteria import Criterion
from coalmine.analysis.metrics import Obs

__all__ = ["ExportError", "analyze_export", "read_export"]

REQUIRED = ("model", "version")
CANDIDATE_ROLES = {"canary", "shadow"}
BASELINE_ROLES = {"stable"}


class ExportError(ValueError):
    pass


def read_export(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow is in the parquet extra
            raise ExportError(
                "reading Parquet needs pyarrow: pip install 'coalmine[parquet]'"
            ) from None
        table = pq.read_table(path)
        yield from table.to_pylist()
    elif suffix in (".csv", ".txt"):
        with path.open(newline="") as f:
            yield from csv.DictReader(f)
    else:
        raise ExportError(f"{path}: expected a .csv or .parquet file")


def _json(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # a bare string (e.g. a class name)


def _num(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _obs(row: Mapping[str, Any], latency_unit: str = "ms") -> Obs:
    """One row, read by the same rules as the API's (coalmine.analysis.inputs)."""
    label = _json(row.get("label"))
    slices = _json(row.get("slices"))
    outcomes = _json(row.get("outcomes"))
    status = row.get("status")
    [(error_class, code)] = inputs.error_outcomes(
        [row.get("error_class") or None], None if status in (None, "") else [_num(status, 200)], 1
    )
    latency = row.get("latency_ms")
    if isinstance(latency, str):
        latency = None if latency == "" else _num(latency, 0.0)
    [lat] = inputs.latencies_ms([latency], latency_unit) or [None]
    [step] = inputs.steps_bp([_num(row.get("canary_weight_bp"), 0)]) or [0]
    weight = _num(row.get("sample_weight"), 1.0)  # 1/rate of a sampled stable row
    if not (math.isfinite(weight) and weight >= 1.0):
        raise ValueError(f"sample_weight: must be ≥ 1, the inverse of a rate (got {weight!r})")
    return Obs(
        prediction=_json(row.get("prediction")),
        scores=_json(row.get("scores")),  # logged beside it, read as the live engine does
        latency_ms=lat,
        status=code,
        error_class=error_class,
        slices=slices if isinstance(slices, dict) else None,
        step=step,
        weight=weight,
        label=label,
        has_label=label is not None,
        outcomes=outcomes if isinstance(outcomes, dict) else None,
    )


def analyze_export(
    path: Path,
    *,
    model: str,
    candidate: str,
    baseline: str,
    criteria: Sequence[Criterion] | None = None,
    mode: str = "auto",
    task: str = "classification",
    alpha: float = 0.05,
    max_slices: int = 20,
    latency_unit: str = "ms",
) -> Analysis:
    rows = list(read_export(path))
    if rows:
        missing = [c for c in REQUIRED if c not in rows[0]]
        if missing:
            raise ExportError(f"{path}: missing column(s) {', '.join(missing)}")
    cand: list[tuple[str, Obs]] = []
    base: list[tuple[str, Obs]] = []
    fresh: list[tuple[str, Obs]] = []  # role "baseline": a fresh instance of production
    roles: set[str] = set()
    for i, row in enumerate(rows):
        if row.get("model") != model:
            continue
        role = row.get("role") or ""
        try:
            obs = _obs(row, latency_unit)
            check_labels([obs], task, None, field="label")
        except (TypeError, ValueError) as exc:
            raise ExportError(f"{path}: row {i + 2}: {exc}") from None
        rid = str(row.get("request_id") or i)
        if row.get("version") == candidate and (not role or role in CANDIDATE_ROLES):
            cand.append((rid, obs))
            roles.add(role)
        elif row.get("version") == baseline and role == "baseline":
            fresh.append((rid, obs))
        elif row.get("version") == baseline and (not role or role in BASELINE_ROLES):
            base.append((rid, obs))
    if mode == "auto":
        mode = "shadow" if "shadow" in roles else "canary"
    like_for_like = mode == "canary" and bool(fresh)
    if like_for_like:
        base = fresh  # judged against the like-for-like baseline, not production
    if not cand or not base:
        raise ExportError(
            f"{path}: found {len(cand)} candidate ({candidate}) and {len(base)} baseline "
            f"({baseline}) rows of model {model!r}; need both"
        )
    noise_floor = mode == "shadow" and bool(fresh)
    a = Analysis(criteria, task=task, mode=mode, alpha=alpha, max_slices=max_slices,
                 noise_floor=noise_floor, like_for_like=like_for_like,
                 latency_unit=latency_unit)  # fmt: skip
    # production's first: the count test needs the rate its rows were logged at
    # (sample_weight) for the candidate's errors (analysis/sampling.py)
    a.observe_requests("baseline", [o for _, o in base])
    a.observe_requests("candidate", [o for _, o in cand])
    a.observe_labels("candidate", [o for _, o in cand if o.has_label or o.outcomes])
    a.observe_labels("baseline", [o for _, o in base if o.has_label or o.outcomes])
    if mode == "shadow":
        by_id = {rid: o for rid, o in base}
        pairs = [(o, by_id[rid]) for rid, o in cand if rid in by_id]
        a.observe_request_pairs(pairs)
        labelled = []
        for c, b in pairs:
            if c.has_label or b.has_label:
                label = c.label if c.has_label else b.label
                c.label = b.label = label
                c.has_label = b.has_label = True
                labelled.append((c, b))
        a.observe_label_pairs(labelled)
        if noise_floor:
            by_fresh = {rid: o for rid, o in fresh}
            a.observe_request_triples([
                (o, by_id[rid], by_fresh[rid]) for rid, o in cand
                if rid in by_id and rid in by_fresh
            ])  # fmt: skip
    return a
