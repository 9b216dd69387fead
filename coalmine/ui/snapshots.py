"""Judgement snapshots: the controller records every evaluation; dashboards draw them.

`rollout_events` keeps only the judgements that caused a transition; a chart of a
criterion's estimate and bounds over time needs every look, so the controller calls
`record_snapshot` once per evaluation (cheap: one INSERT of the judgement's JSON).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from coalmine.store.schema import judgement_snapshots

__all__ = ["Snapshot", "read_snapshots", "record_snapshot", "to_json"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: int
    rollout_id: int
    ts: float
    phase: str
    step_index: int
    canary_weight_bp: int
    verdict: str
    judgement: dict[str, Any]


def _finite(value: Any) -> Any:
    # Bounds are infinite until enough samples arrive (p99 latency, say); JSON has no
    # Infinity, and a browser's JSON.parse rejects Python's spelling of it.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """Strict JSON (non-finite floats become null) of a judgement or any story data."""
    return json.dumps(_finite(value), allow_nan=False, default=str)


@contextmanager
def _connection(conn_or_engine: Connection | Engine) -> Iterator[Connection]:
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            yield conn
    else:
        yield conn_or_engine


def _verdict_of(judgement: dict[str, Any]) -> str:
    verdict = judgement.get("verdict") or judgement.get("overall") or "unknown"
    return str(getattr(verdict, "value", verdict))[:16]


def record_snapshot(
    conn_or_engine: Connection | Engine,
    rollout_id: int,
    phase: str,
    step_index: int,
    canary_weight_bp: int,
    judgement_dict: dict[str, Any],
    *,
    ts: float | None = None,
) -> int:
    """Persist one evaluation's judgement; returns the snapshot id.

    Given a Connection it joins the caller's transaction (so the snapshot commits with the
    transition it caused); given an Engine it commits on its own.
    """
    row = {
        "rollout_id": rollout_id,
        "ts": time.time() if ts is None else ts,
        "phase": phase,
        "step_index": step_index,
        "canary_weight_bp": canary_weight_bp,
        "verdict": _verdict_of(judgement_dict),
        "judgement": to_json(judgement_dict),
    }
    stmt = insert(judgement_snapshots).values(**row)
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.begin() as conn:
            result = conn.execute(stmt)
    else:
        result = conn_or_engine.execute(stmt)
    key = result.inserted_primary_key
    return int(key[0]) if key else 0


def read_snapshots(
    conn_or_engine: Connection | Engine,
    rollout_id: int,
    *,
    after_id: int = 0,
    max_points: int = 2000,
) -> list[Snapshot]:
    """The rollout's snapshots in order; `after_id` lets a poller fetch only new ones.

    A long rollout evaluated every few seconds has tens of thousands of snapshots; beyond
    `max_points` every k-th is read (by position), always with the newest, so a chart spans
    the whole rollout at an even density.
    """
    t = judgement_snapshots
    where = (t.c.rollout_id == rollout_id) & (t.c.id > after_id)
    with _connection(conn_or_engine) as conn:
        ids = list(conn.execute(select(t.c.id).where(where).order_by(t.c.id)).scalars())
        if len(ids) > max_points:
            step = -(-len(ids) // max_points)
            ids = sorted(set(ids[::step]) | {ids[-1]})
        rows: list[Any] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows.extend(conn.execute(select(t).where(t.c.id.in_(chunk)).order_by(t.c.id)))
    return [
        Snapshot(
            id=r.id,
            rollout_id=r.rollout_id,
            ts=r.ts,
            phase=r.phase,
            step_index=r.step_index,
            canary_weight_bp=r.canary_weight_bp,
            verdict=r.verdict,
            judgement=json.loads(r.judgement),
        )
        for r in rows
    ]
