"""The Evaluator reads each row's sample_weight from the log: with production's rows of a
canary step logged at 10%, an as-good candidate's error count is judged against its share
of LOGGED rows (real SQLite; the rows as the gateway's writer stores them)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from coalmine.analysis.criteria import Criterion
from coalmine.analysis.engine import Evaluator
from coalmine.analysis.sequential import Verdict
from coalmine.analysis.sources.export import ExportError, analyze_export
from coalmine.store.schema import predictions


def test_sampled_stable_rows_are_weighted_in_the_count_test(store_engine: Engine) -> None:
    rng = np.random.default_rng(11)
    rows = []
    for i in range(60_000):
        canary = rng.random() < 0.05
        if not canary and rng.random() >= 0.1:
            continue  # a stable call the writer did not keep
        rows.append({
            "request_id": f"r{i}", "model": "m", "version": "v2" if canary else "v1",
            "role": "canary" if canary else "stable", "ts": 1_000.0 + i, "latency_ms": 5.0,
            "status": 500 if rng.random() < 0.03 else 200, "canary_weight_bp": 500,
            "rollout_id": 1, "sample_weight": None if canary else 10.0,
        })  # fmt: skip
    with store_engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    ev = Evaluator(
        store_engine, model="m", candidate="v2", baseline="v1", mode="canary", rollout_id=1,
        criteria=[Criterion.model_validate({"metric": "error_rate", "max_ratio": 1.5})],
    )  # fmt: skip
    judgement = ev.evaluate(now=2_000.0)
    assert ev.analysis.logged_rate.rate(500) == 0.1
    # ~3,000 candidate and ~5,700 logged production rows, the same error rate: about a third
    # of the logged errors are the candidate's, as its logged share (34%) says. Read as a
    # 5% share (the rows unweighted) that is a 7x error ratio and a FAIL.
    assert judgement.verdict is not Verdict.FAIL
    # what the judgement says beside the logged n: the calls they stand for
    [note] = [n for n in judgement.notes if n.startswith("sampled:")]
    rows = judgement.n_baseline
    assert f"{rows:,} logged rows stand for ~{rows * 10:,} calls (logged at 0.1)" in note
    e = next(iter(ev.analysis.evalues.values()))
    assert 0.6 < e.ratio_estimate < 1.5


def test_an_export_with_sampled_stable_rows_is_weighted_too(tmp_path: Path) -> None:
    """`coalmine analyze` on an exported log reads sample_weight as the live engine does;
    a weight below 1 is refused naming the column."""
    rng = np.random.default_rng(12)
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["request_id", "model", "version", "role", "status",
                               "canary_weight_bp", "sample_weight"])  # fmt: skip
        w.writeheader()
        for i in range(60_000):
            canary = rng.random() < 0.05
            if not canary and rng.random() >= 0.1:
                continue
            w.writerow({"request_id": f"r{i}", "model": "m", "version": "v2" if canary else "v1",
                        "role": "canary" if canary else "stable",
                        "status": 500 if rng.random() < 0.03 else 200, "canary_weight_bp": 500,
                        "sample_weight": "" if canary else 10.0})  # fmt: skip
    crit = [Criterion.model_validate({"metric": "error_rate", "max_ratio": 1.5})]
    a = analyze_export(path, model="m", candidate="v2", baseline="v1", criteria=crit)
    assert a.logged_rate.rate(500) == 0.1
    assert a.judge(now=0.0).verdict is not Verdict.FAIL
    text = path.read_text().replace(",10.0\n", ",0.5\n", 1)
    path.write_text(text)
    with pytest.raises(ExportError, match="sample_weight"):
        analyze_export(path, model="m", candidate="v2", baseline="v1", criteria=crit)
