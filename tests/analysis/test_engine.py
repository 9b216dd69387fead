"""Evaluator on a real SQLite file: incremental reads, late and early labels, shadow pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, insert

from coalmine.analysis import Criterion, Verdict
from coalmine.analysis.engine import Evaluator
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback

CRITERIA = [
    Criterion(metric="accuracy", margin=0.01),
    Criterion(metric="error_rate", margin=0.01),
    Criterion(metric="latency_mean", max_ratio=1.5),
]


def _engine(tmp_path: Path) -> Engine:
    return open_engine(f"sqlite:///{tmp_path / 'coalmine.db'}")


Rows = tuple[list[PredictionRecord], dict[str, int]]


def _rows(rng: np.random.Generator, start: int, n: int, share_bp: int, acc_c: float,
          acc_b: float, *, shadow: bool = False) -> Rows:  # fmt: skip
    records, labels = [], {}
    for i in range(start, start + n):
        rid = f"r{i}"
        y = int(rng.integers(0, 2))
        labels[rid] = y
        region = "eu" if i % 2 else "us"
        canary = (not shadow) and rng.random() < share_bp / 10_000

        def rec(version: str, role: str, acc: float, rid: str = rid, y: int = y,
                region: str = region, i: int = i) -> PredictionRecord:  # fmt: skip
            pred = y if rng.random() < acc else 1 - y
            return PredictionRecord(
                request_id=rid,
                model="m",
                version=version,
                role=role,
                ts=1000.0 + i,
                latency_ms=float(rng.lognormal(3, 0.2)),
                status=200,
                prediction=pred,
                slices={"region": region},
                canary_weight_bp=share_bp,
            )

        if shadow:
            records += [rec("v1", "stable", acc_b), rec("v2", "shadow", acc_c)]
        else:
            records.append(rec("v2", "canary", acc_c) if canary else rec("v1", "stable", acc_b))
    return records, labels


def _label(engine: Engine, labels: dict[str, int]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(feedback), [
            {"request_id": rid, "label": json.dumps(y), "outcomes": None, "ts": 2000.0}
            for rid, y in labels.items()
        ])  # fmt: skip


def test_incremental_reads_join_late_and_early_labels_and_match_a_full_reread(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    rng = np.random.default_rng(7)
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                   mode="canary", max_slices=4)  # fmt: skip
    # increment 1: predictions, no labels yet
    recs1, labels1 = _rows(rng, 0, 4000, 5000, 0.80, 0.90)
    insert_batch(engine, recs1)
    j1 = ev.evaluate()
    assert ev.rows_read == 4000 and ev.labels_read == 0
    assert j1.n_candidate + j1.n_baseline == 4000
    acc = next(r for r in j1.results if r.name == "accuracy" and r.slice is None)
    assert acc.verdict is Verdict.INCONCLUSIVE and acc.n_candidate == 0  # no labels yet
    # increment 2: the labels of increment 1 arrive late; more predictions arrive too
    _label(engine, labels1)
    recs2, labels2 = _rows(rng, 4000, 3000, 5000, 0.80, 0.90)
    # labels of increment 2 arrive BEFORE its prediction rows are logged (async gateway log)
    _label(engine, labels2)
    insert_batch(engine, recs2)
    j2 = ev.evaluate()
    assert ev.rows_read == 7000  # only the 3000 new rows were read
    assert ev.labels_read == 7000  # 4000 late labels + 3000 early ones, each exactly once
    acc = next(r for r in j2.results if r.name == "accuracy" and r.slice is None)
    assert acc.n_candidate + acc.n_baseline == 7000
    assert acc.verdict is Verdict.FAIL  # 10 points worse
    assert j2.verdict is Verdict.FAIL
    # nothing new: same judgement numbers, nothing re-read
    j3 = ev.evaluate()
    assert ev.rows_read == 7000 and ev.labels_read == 7000
    assert [r.estimate for r in j3.results] == [r.estimate for r in j2.results]
    # a fresh evaluator re-reading everything agrees with the incremental one
    fresh = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                      mode="canary", max_slices=4)  # fmt: skip
    jf = fresh.evaluate()
    for a, b in zip(jf.results, j3.results, strict=True):
        assert (a.name, a.slice, a.verdict) == (b.name, b.slice, b.verdict)
        assert a.n_candidate == b.n_candidate and a.n_baseline == b.n_baseline
        assert np.isclose(a.estimate, b.estimate, equal_nan=True)
    # resume from state: same cursors, continues incrementally
    resumed = Evaluator.from_state(engine, json.loads(json.dumps(ev.state_dict())))
    recs3, labels3 = _rows(rng, 7000, 500, 5000, 0.80, 0.90)
    insert_batch(engine, recs3)
    _label(engine, labels3)
    resumed.evaluate()
    assert resumed.rows_read == 7500 and resumed.labels_read == 7500
    engine.dispose()


def test_batch_limit_pages_through_a_backlog(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rng = np.random.default_rng(3)
    recs, labels = _rows(rng, 0, 2500, 5000, 0.9, 0.9)
    insert_batch(engine, recs)
    _label(engine, labels)
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                   mode="canary", batch_limit=1000)  # fmt: skip
    ev.evaluate()
    assert ev.rows_read == 1000
    ev.evaluate()
    ev.evaluate()
    assert ev.rows_read == 2500 and ev.labels_read == 2500
    engine.dispose()


def test_shadow_pairs_join_on_request_id_across_increments(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    rng = np.random.default_rng(11)
    criteria = [Criterion(metric="accuracy", margin=0.01), Criterion(metric="agreement", min=0.5)]
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=criteria,
                   mode="shadow", max_slices=2)  # fmt: skip
    recs, labels = _rows(rng, 0, 3000, 0, 0.80, 0.90, shadow=True)
    stable = [r for r in recs if r.role == "stable"]
    shadow = [r for r in recs if r.role == "shadow"]
    insert_batch(engine, stable)  # the shadow answers are logged later than production's
    ev.evaluate()
    insert_batch(engine, shadow)
    _label(engine, {k: v for k, v in labels.items() if int(k[1:]) < 1500})
    j = ev.evaluate()
    agree = next(r for r in j.results if r.name == "agreement" and r.slice is None)
    assert agree.n_candidate == 3000  # every request paired once
    _label(engine, {k: v for k, v in labels.items() if int(k[1:]) >= 1500})
    j = ev.evaluate()
    acc = next(r for r in j.results if r.name == "accuracy" and r.slice is None)
    assert acc.n_candidate == 3000  # paired labelled examples, each once
    assert acc.verdict is Verdict.FAIL
    assert "shadow accuracy" in acc.sentence
    engine.dispose()
