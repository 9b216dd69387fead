"""Evaluation cost against log size, and the error-rate table of the statistics.

1. Cost: a SQLite prediction log is grown to 10 thousand, 1 million and 10 million rows
   (executemany in chunks; 20% of requests get a feedback row). At each size an Evaluator
   positioned at the end of the log (as after earlier evaluations; the engine is kept and
   warmed, as the controller keeps it) times one incremental evaluation that reads a fixed
   batch of new rows (BATCH predictions + their labels, and
   late labels for older rows). The ratio last/first must stay near 1: the cost follows the
   new rows, not the log.
2. Rates: `benchmarks/analysis_rates.py` (false rollbacks and detection: Coalmine vs naive
   peeking vs a fixed-horizon test).

Run: `python benchmarks/analysis.py [--sizes 10000,1000000,10000000] [--skip-rates]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import Engine

from coalmine.analysis import Criterion
from coalmine.analysis.engine import Evaluator
from coalmine.store.engine import open_engine

BATCH = 5_000  # new prediction rows per timed evaluation
LATE_LABELS = 1_000  # labels for older rows arriving in the same window
CHUNK = 200_000
REPEATS = 5
CRITERIA = [
    Criterion(metric="accuracy", margin=0.01),
    Criterion(metric="error_rate", margin=0.005),
    Criterion(metric="latency_p95", max_ratio=1.2),
    Criterion(metric="psi"),
]

INSERT_P = (
    "INSERT INTO predictions (request_id, model, version, role, ts, latency_ms, status, "
    "error_class, prediction, input, slices, canary_weight_bp, rollout_id) "
    "VALUES (?, 'm', ?, ?, ?, ?, ?, ?, ?, NULL, ?, 2000, NULL)"
)
INSERT_F = "INSERT INTO feedback (request_id, label, outcomes, ts) VALUES (?, ?, NULL, ?)"
SLICES = [json.dumps({"region": r}) for r in ("eu", "us", "asia", "latam")]


def _rows(start: int, n: int, rnd: random.Random) -> tuple[list[tuple], list[tuple]]:
    preds, labels = [], []
    for i in range(start, start + n):
        canary = rnd.random() < 0.2
        y = rnd.random() < 0.5
        pred = y if rnd.random() < 0.9 else not y
        err = rnd.random() < 0.01
        preds.append((
            f"r{i}", "v2" if canary else "v1", "canary" if canary else "stable", float(i),
            rnd.lognormvariate(3, 0.3), 500 if err else 200, "http_5xx" if err else None,
            "1" if pred else "0", SLICES[i % 4],
        ))  # fmt: skip
        if rnd.random() < 0.2:
            labels.append((f"r{i}", "1" if y else "0", float(i)))
    return preds, labels


def grow(db: sqlite3.Connection, start: int, target: int, rnd: random.Random) -> int:
    while start < target:
        n = min(CHUNK, target - start)
        preds, labels = _rows(start, n, rnd)
        db.executemany(INSERT_P, preds)
        db.executemany(INSERT_F, labels)
        db.commit()
        start += n
    return start


def timed_evaluation(
    engine: Engine, db: sqlite3.Connection, size: int, rnd: random.Random
) -> float:
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                   mode="canary", max_slices=8)  # fmt: skip
    # position it at the end of the log, as after its earlier evaluations
    ev.last_prediction_id = db.execute("SELECT max(id) FROM predictions").fetchone()[0]
    ev.last_feedback_id = db.execute("SELECT max(id) FROM feedback").fetchone()[0]
    preds, labels = _rows(size, BATCH, rnd)
    late = [(f"r{rnd.randrange(size)}", "1", float(size)) for _ in range(LATE_LABELS)]
    db.executemany(INSERT_P, preds)
    db.executemany(INSERT_F, labels + late)
    db.commit()
    t0 = time.perf_counter()
    ev.evaluate()
    elapsed = time.perf_counter() - t0
    assert ev.rows_read == BATCH, ev.rows_read
    return elapsed


def cost_table(sizes: list[int], workdir: Path) -> list[tuple[int, float, float]]:
    path = workdir / "bench.db"
    url = f"sqlite:///{path}"
    open_engine(url).dispose()  # create the schema with the real migrations
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(1)
    n = 0
    out = []
    for size in sizes:
        t0 = time.perf_counter()
        n = grow(db, n, size, rnd)
        gen = time.perf_counter() - t0
        # REPEATS timed evaluations per size, each on its own fresh batch. The minimum is
        # the figure (the machine is shared: the median is shown to expose the noise).
        # The controller keeps its engine (and the connections' page caches) between
        # evaluations, so one engine per size; the first evaluation warms it, untimed.
        engine = open_engine(url, migrate=False)
        timed_evaluation(engine, db, n, rnd)
        n += BATCH
        times = []
        for _ in range(REPEATS):
            times.append(timed_evaluation(engine, db, n, rnd))
            n += BATCH
        engine.dispose()
        out.append((size, min(times), statistics.median(times)))
        print(f"  {size:>12,} rows: evaluation min {min(times) * 1000:7.1f} ms, median "
              f"{statistics.median(times) * 1000:7.1f} ms (log grown in {gen:.0f} s)",
              flush=True)  # fmt: skip
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--skip-rates", action="store_true")
    parser.add_argument("--dir", default=None, help="where to put the SQLite file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Evaluation cost vs log size (SQLite, {BATCH:,} new rows + labels per evaluation, "
          f"{len(CRITERIA)} criteria, 4 slices)")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = cost_table(sizes, Path(tmp))
    print(f"\n| logged rows | evaluation, min of {REPEATS} (ms) | median (ms) |")
    print("|---:|---:|---:|")
    for size, best, median in rows:
        print(f"| {size:,} | {best * 1000:.1f} | {median * 1000:.1f} |")
    print(f"ratio last/first (min): {rows[-1][1] / rows[0][1]:.2f}")
    if not args.skip_rates:
        print()
        try:
            import analysis_rates
        except ImportError:
            print("benchmarks/analysis_rates.py not found: rates table skipped")
        else:
            analysis_rates.main()


if __name__ == "__main__":
    main()
