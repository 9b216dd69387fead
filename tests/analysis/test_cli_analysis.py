"""`coalmine analyze` over a CSV export and `coalmine plan`, run as the real command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner, Result

from coalmine.analysis.plan import plan_steps, step_can_decide
from coalmine.cli import app

COLUMNS = ["id", "request_id", "model", "version", "role", "ts", "latency_ms", "status",
           "error_class", "prediction", "slices", "canary_weight_bp", "label"]  # fmt: skip


def _export(path: Path, acc_candidate: float, n: int = 8000) -> None:
    rng = np.random.default_rng(4)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(n):
            canary = rng.random() < 0.3
            acc = acc_candidate if canary else 0.9
            y = int(rng.integers(0, 2))
            pred = y if rng.random() < acc else 1 - y
            label = json.dumps(y) if rng.random() < 0.8 else ""  # some labels missing
            w.writerow([i, f"r{i}", "m", "v2" if canary else "v1", "canary" if canary else "stable",
                        1000 + i, f"{rng.lognormal(3, 0.2):.2f}", 200, "", json.dumps(pred),
                        json.dumps({"region": "eu" if i % 2 else "us"}), 3000, label])  # fmt: skip


def _coalmine(*args: str) -> Result:
    # the real Typer app in-process (a subprocess per call costs seconds of imports)
    return CliRunner().invoke(app, list(args))


def test_analyze_a_csv_export_prints_the_judgement_and_json(tmp_path: Path) -> None:
    export = tmp_path / "log.csv"
    _export(export, acc_candidate=0.75)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("criteria:\n  - metric: accuracy\n    margin: 0.01\n"
                        "  - metric: latency_p95\n    max_ratio: 1.5\n")  # fmt: skip
    out = _coalmine("analyze", str(export), "--model", "m", "--candidate", "v2", "--baseline",
                    "v1", "--criteria", str(criteria))  # fmt: skip
    assert out.exit_code == 1, out.output  # FAIL exits 1
    assert out.output.startswith("FAIL")
    assert "canary accuracy" in out.output and "is below the allowed −1.0 pts: FAIL" in out.output
    out = _coalmine("analyze", str(export), "--model", "m", "--candidate", "v2", "--baseline",
                    "v1", "--criteria", str(criteria), "--json")  # fmt: skip
    data = json.loads(out.output)
    assert data["verdict"] == "FAIL"
    acc = next(r for r in data["results"] if r["name"] == "accuracy" and r["slice"] is None)
    assert acc["verdict"] == "FAIL" and acc["upper"] < -0.01
    assert {r["slice"] for r in data["results"]} == {None, "region=eu", "region=us"}


def test_analyze_rejects_bad_criteria_with_the_field_path(tmp_path: Path) -> None:
    export = tmp_path / "log.csv"
    _export(export, acc_candidate=0.9, n=50)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("- metric: acuracy\n")
    out = _coalmine("analyze", str(export), "--model", "m", "--candidate", "v2", "--baseline",
                    "v1", "--criteria", str(criteria))  # fmt: skip
    assert out.exit_code == 2
    assert "criteria.0.metric" in out.output and "unknown metric 'acuracy'" in out.output
    out = _coalmine("analyze", str(export), "--model", "m", "--candidate", "v9", "--baseline", "v1")
    assert out.exit_code == 2 and "found 0 candidate (v9)" in out.output


def test_plan_prints_both_waits_and_warns_when_a_step_cannot_decide() -> None:
    out = _coalmine("plan", "--rps", "20", "--label-rate", "0.5", "--steps", "1,5,25,50,100",
                    "--min-effect", "0.02", "--base", "0.9", "--max-duration", "3600")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "anytime n" in out.output and "fixed n" in out.output
    assert "warning: step 1%" in out.output and "warning: step 5%" in out.output
    assert "warning: step 25%" not in out.output


def test_plan_math() -> None:
    plans = plan_steps([1, 5, 50, 100], rps=100, label_rate=1.0, min_effect=0.02, base=0.9)
    one, five, fifty, full = plans
    # anytime needs more than fixed horizon (the price of looking), but well under 3×
    for p in (one, five, fifty):
        assert p.fixed_samples is not None and p.anytime_samples is not None
        assert 1.5 < p.anytime_samples / p.fixed_samples < 3
    # a bigger share means more candidate samples per second: shorter waits
    assert one.anytime_seconds > five.anytime_seconds > fifty.anytime_seconds
    assert full.anytime_samples is None and full.can_decide
    # at 5% share, 90% power, the 2-point drop needs ~5,000 candidate samples (issue: ~5,100)
    assert 4000 < five.anytime_samples < 6500  # type: ignore[operator]
    step = step_can_decide(share_percent=1, rps=10, label_rate=0.1, min_effect=0.02,
                           max_duration_s=600)  # fmt: skip
    assert not step.can_decide and "INCONCLUSIVE" in (step.warning() or "")


def test_analyze_reads_parquet_too(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    export = tmp_path / "log.csv"
    _export(export, acc_candidate=0.9, n=2000)
    with export.open() as f:
        rows = list(csv.DictReader(f))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "log.parquet")
    out = _coalmine("analyze", str(tmp_path / "log.parquet"), "--model", "m", "--candidate",
                    "v2", "--baseline", "v1", "--json", "--max-slices", "0")  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["n_candidate"] + data["n_baseline"] == 2000
    assert data["verdict"] in ("PASS", "INCONCLUSIVE")
