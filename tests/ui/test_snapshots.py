import itertools
import json
import math
from pathlib import Path

import pytest
from sqlalchemy import select

from coalmine.store.engine import open_engine
from coalmine.store.schema import judgement_snapshots
from coalmine.ui.snapshots import read_snapshots, record_snapshot


def test_snapshots_round_trip_in_order_with_infinite_bounds_as_null(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    judgement = {
        "verdict": "inconclusive",
        "results": [{"name": "p99", "lower": -math.inf, "upper": math.inf, "estimate": 1.0}],
    }
    first = record_snapshot(engine, 7, "canary", 1, 500, judgement, ts=10.0)
    second = record_snapshot(engine, 7, "canary", 2, 2500, {"verdict": "pass"}, ts=20.0)
    record_snapshot(engine, 8, "shadow", 0, 0, {"verdict": "fail"}, ts=15.0)
    assert second > first

    snaps = read_snapshots(engine, 7)
    assert [(s.ts, s.step_index, s.canary_weight_bp, s.verdict) for s in snaps] == [
        (10.0, 1, 500, "inconclusive"),
        (20.0, 2, 2500, "pass"),
    ]
    assert snaps[0].judgement["results"][0]["upper"] is None
    assert [s.id for s in read_snapshots(engine, 7, after_id=first)] == [second]
    with engine.connect() as conn:  # stored as strict JSON a browser can parse
        text = conn.execute(select(judgement_snapshots.c.judgement)).scalars().first()
    assert "Infinity" not in text and json.loads(text)["verdict"] == "inconclusive"
    engine.dispose()


def test_a_snapshot_joins_the_callers_transaction(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        record_snapshot(conn, 1, "canary", 0, 100, {"verdict": "fail"})
        raise RuntimeError("the transition failed")
    assert read_snapshots(engine, 1) == []  # rolled back with it
    engine.dispose()


def test_a_long_rollout_is_thinned_evenly_keeping_the_newest(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.begin() as conn:
        for i in range(1001):
            record_snapshot(conn, 3, "canary", 0, 100, {"verdict": "inconclusive"}, ts=float(i))
    snaps = read_snapshots(engine, 3, max_points=100)
    assert 50 <= len(snaps) <= 101  # at most max_points (+ the newest)
    assert snaps[0].ts == 0.0 and snaps[-1].ts == 1000.0
    gaps = {b.ts - a.ts for a, b in itertools.pairwise(snaps)}
    assert max(gaps) <= 11  # even density: no hole in the chart
    engine.dispose()
