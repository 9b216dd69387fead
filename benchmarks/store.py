"""What one PostgreSQL carries: log rows per second and the evaluation cost as the log grows.

1. Writes: 1 and 3 writer processes (as 1 and 3 gateway replicas) each writing the log
   writer's batches (`logging.batch_size`, 500 rows of a realistic shape) for a fixed time
   into one PostgreSQL server started here (its stock settings: fsync and synchronous commit
   on), through the batched INSERT and through COPY side by side; SQLite's INSERT (WAL,
   synchronous NORMAL, one writer) for reference.
2. Evaluation: the log grown to each size (COPY on PostgreSQL, executemany on SQLite; 20%
   of requests labelled), then an Evaluator positioned at its end, as the controller keeps
   it, times incremental evaluations that each read a fixed batch of new rows and labels
   (benchmarks/analysis.py's workload). The cost must follow the new rows, not the log.

Run: `python benchmarks/store.py [--sizes 10000,1000000,10000000] [--writers 1,3]
[--seconds 5] [--skip-writes] [--skip-eval] [--dir DIR]`. Needs Debian's PostgreSQL 15
binaries (`$COALMINE_PG_BIN`, default /usr/lib/postgresql/15/bin).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import Engine, create_engine, text

from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch, write_batch

PG_BIN = Path(os.environ.get("COALMINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
BATCH = 500  # the writer's default logging.batch_size


# -- a PostgreSQL server of its own -----------------------------------------------------------


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 server on a Unix socket with its stock durability; yields an admin URL."""
    # its own directory under /tmp: the postgres user cannot enter a private temporary one
    root = Path(tempfile.mkdtemp(prefix="coalmine-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-k {root} -c listen_addresses='' -c max_connections=50 -c shared_buffers=256MB"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin: str, name: str) -> str:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = admin.replace("/postgres?", f"/{name}?")
    open_engine(url).dispose()  # the real migrations
    return url


# -- 1. writes --------------------------------------------------------------------------------


def _record(rnd: random.Random, i: int, writer: int) -> PredictionRecord:
    canary = rnd.random() < 0.1
    return PredictionRecord(
        request_id=f"{writer:02d}-{i:012d}-{rnd.getrandbits(40):010x}",
        model="iris",
        version="v2" if canary else "v1",
        role="canary" if canary else "stable",
        ts=time.time(),
        latency_ms=rnd.lognormvariate(1.5, 0.4),
        status=200,
        error_class=None,
        prediction={"predictions": [rnd.randrange(3)]},
        input='{"instances":[[5.1,3.5,1.4,0.2]]}',
        slices={"region": rnd.choice(("eu", "us", "asia"))},
        canary_weight_bp=1000,
        rollout_id=1,
        scores={"probabilities": [[0.9, 0.05, 0.05]]},
    )


def _writer(url: str, how: str, seconds: float, writer: int, start: Any, out: Any) -> None:
    write: Callable[[Engine, Sequence[PredictionRecord]], int] = (
        write_batch if how == "copy" else insert_batch
    )
    engine = open_engine(url, migrate=False)
    rnd = random.Random(writer)
    batches = [[_record(rnd, b * BATCH + i, writer) for i in range(BATCH)] for b in range(20)]
    write(engine, batches[0])  # connect and warm up, untimed
    start.wait()
    rows, t0, b = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        rows += write(engine, batches[b % len(batches)])
        b += 1
    out.put((rows, time.perf_counter() - t0))
    engine.dispose()


def rows_per_second(url: str, how: str, writers: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(url, how, seconds, w, start, out)) for w in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every writer connected and warmed
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return sum(rows for rows, _ in results) / max(elapsed for _, elapsed in results)


def write_table(admin: str, workdir: Path, writer_counts: list[int], seconds: float) -> None:
    print(
        f"\nLog writes: batches of {BATCH} rows, {seconds:.0f} s per cell, one writer = one "
        f"process (a gateway replica)",
        flush=True,
    )
    results: list[tuple[str, int, str, float]] = []
    for n in writer_counts:
        for how in ("insert", "copy"):
            url = fresh_database(admin, f"w_{how}_{n}")
            rate = rows_per_second(url, how, n, seconds)
            results.append(("PostgreSQL", n, how, rate))
            print(f"  PostgreSQL, {n} writer(s), {how}: {rate:,.0f} rows/s", flush=True)
    sqlite_url = f"sqlite:///{workdir / 'writes.db'}"
    open_engine(sqlite_url).dispose()
    rate = rows_per_second(sqlite_url, "insert", 1, seconds)
    results.append(("SQLite", 1, "insert", rate))
    print(f"  SQLite, 1 writer, insert: {rate:,.0f} rows/s", flush=True)
    print("\n| store | writers | batched INSERT rows/s | COPY rows/s | COPY/INSERT |")
    print("|---|---:|---:|---:|---:|")
    for n in writer_counts:
        ins = next(r for s, w, h, r in results if s == "PostgreSQL" and w == n and h == "insert")
        cp = next(r for s, w, h, r in results if s == "PostgreSQL" and w == n and h == "copy")
        print(f"| PostgreSQL | {n} | {ins:,.0f} | {cp:,.0f} | {cp / ins:.2f} |")
    print(f"| SQLite | 1 | {rate:,.0f} | | |", flush=True)


# -- 2. evaluation cost -----------------------------------------------------------------------

NEW_ROWS = 5_000  # new prediction rows per timed evaluation
LATE_LABELS = 1_000  # labels for older rows arriving in the same window
CHUNK = 200_000
REPEATS = 5
SLICES = [json.dumps({"region": r}) for r in ("eu", "us", "asia", "latam")]
P_COLUMNS = (
    "request_id",
    "model",
    "version",
    "role",
    "ts",
    "latency_ms",
    "status",
    "error_class",
    "prediction",
    "input",
    "slices",
    "canary_weight_bp",
    "rollout_id",
)
F_COLUMNS = ("request_id", "label", "outcomes", "ts")


def _rows(start: int, n: int, rnd: random.Random) -> tuple[list[tuple], list[tuple]]:
    preds, labels = [], []
    for i in range(start, start + n):
        canary = rnd.random() < 0.2
        y = rnd.random() < 0.5
        pred = y if rnd.random() < 0.9 else not y
        err = rnd.random() < 0.01
        preds.append(
            (
                f"r{i}",
                "m",
                "v2" if canary else "v1",
                "canary" if canary else "stable",
                float(i),
                rnd.lognormvariate(3, 0.3),
                500 if err else 200,
                "http_5xx" if err else None,
                "1" if pred else "0",
                None,
                SLICES[i % 4],
                2000,
                None,
            )
        )
        if rnd.random() < 0.2:
            labels.append((f"r{i}", "1" if y else "0", None, float(i)))
    return preds, labels


class SqliteLog:
    name = "SQLite"

    def __init__(self, workdir: Path) -> None:
        path = workdir / "eval.db"
        self.url = f"sqlite:///{path}"
        open_engine(self.url).dispose()
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")

    def add(self, preds: list[tuple], labels: list[tuple]) -> None:
        marks = ", ".join("?" * len(P_COLUMNS))
        self.db.executemany(
            f"INSERT INTO predictions ({', '.join(P_COLUMNS)}) VALUES ({marks})", preds
        )
        self.db.executemany(
            f"INSERT INTO feedback ({', '.join(F_COLUMNS)}) VALUES (?,?,?,?)", labels
        )
        self.db.commit()

    def max_ids(self) -> tuple[int, int]:
        p = self.db.execute("SELECT max(id) FROM predictions").fetchone()[0]
        f = self.db.execute("SELECT max(id) FROM feedback").fetchone()[0]
        return int(p), int(f)

    def analyze(self) -> None:
        self.db.execute("ANALYZE")
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class PostgresLog:
    name = "PostgreSQL"

    def __init__(self, admin: str) -> None:
        import psycopg

        self.url = fresh_database(admin, "evaluation")
        engine = create_engine(self.url)
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        engine.dispose()
        self.db = psycopg.connect(*args, **kwargs)

    def add(self, preds: list[tuple], labels: list[tuple]) -> None:
        with self.db.cursor() as cur:
            with cur.copy(f"COPY predictions ({', '.join(P_COLUMNS)}) FROM STDIN") as copy:
                for row in preds:
                    copy.write_row(row)
            with cur.copy(f"COPY feedback ({', '.join(F_COLUMNS)}) FROM STDIN") as copy:
                for row in labels:
                    copy.write_row(row)
        self.db.commit()

    def analyze(self) -> None:
        """Planner statistics for the grown log, as autovacuum keeps them in production."""
        self.db.execute("ANALYZE predictions")
        self.db.execute("ANALYZE feedback")
        self.db.commit()

    def max_ids(self) -> tuple[int, int]:
        row = self.db.execute(
            "SELECT (SELECT max(id) FROM predictions), (SELECT max(id) FROM feedback)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.db.close()


def _timed_evaluation(engine: Engine, log: Any, size: int, rnd: random.Random) -> float:
    from coalmine.analysis import Criterion
    from coalmine.analysis.engine import Evaluator

    criteria = [
        Criterion(metric="accuracy", margin=0.01),
        Criterion(metric="error_rate", margin=0.005),
        Criterion(metric="latency_p95", max_ratio=1.2),
        Criterion(metric="psi"),
    ]
    ev = Evaluator(
        engine,
        model="m",
        candidate="v2",
        baseline="v1",
        criteria=criteria,
        mode="canary",
        max_slices=8,
    )
    ev.last_prediction_id, ev.last_feedback_id = log.max_ids()  # at the end of the log
    preds, labels = _rows(size, NEW_ROWS, rnd)
    late = [(f"r{rnd.randrange(size)}", "1", None, float(size)) for _ in range(LATE_LABELS)]
    log.add(preds, labels + late)
    t0 = time.perf_counter()
    ev.evaluate()
    elapsed = time.perf_counter() - t0
    assert ev.rows_read == NEW_ROWS, ev.rows_read
    return elapsed


def evaluation_costs(log: Any, sizes: list[int]) -> dict[int, tuple[float, float]]:
    rnd = random.Random(1)
    n = 0
    out = {}
    for size in sizes:
        t0 = time.perf_counter()
        while n < size:
            k = min(CHUNK, size - n)
            log.add(*_rows(n, k, rnd))
            n += k
        log.analyze()
        grown = time.perf_counter() - t0
        engine = open_engine(log.url, migrate=False)
        _timed_evaluation(engine, log, n, rnd)  # warms the engine, untimed
        n += NEW_ROWS
        times = []
        for _ in range(REPEATS):
            times.append(_timed_evaluation(engine, log, n, rnd))
            n += NEW_ROWS
        engine.dispose()
        out[size] = (min(times), statistics.median(times))
        print(
            f"  {log.name}, {size:>12,} rows: min {min(times) * 1000:7.1f} ms, median "
            f"{statistics.median(times) * 1000:7.1f} ms (grown in {grown:.0f} s)",
            flush=True,
        )
    return out


def evaluation_table(admin: str, workdir: Path, sizes: list[int]) -> None:
    print(
        f"\nEvaluation cost vs log size ({NEW_ROWS:,} new rows + labels and {LATE_LABELS:,} "
        f"late labels per evaluation, 4 criteria, 4 slices; min of {REPEATS})",
        flush=True,
    )
    lite = SqliteLog(workdir)
    sqlite_costs = evaluation_costs(lite, sizes)
    lite.close()
    pg = PostgresLog(admin)
    pg_costs = evaluation_costs(pg, sizes)
    pg.close()
    print("\n| logged rows | SQLite min (median) ms | PostgreSQL min (median) ms |")
    print("|---:|---:|---:|")
    for size in sizes:
        s, p = sqlite_costs[size], pg_costs[size]
        print(
            f"| {size:,} | {s[0] * 1000:.1f} ({s[1] * 1000:.1f}) | "
            f"{p[0] * 1000:.1f} ({p[1] * 1000:.1f}) |"
        )
    first, last = sizes[0], sizes[-1]
    lite_ratio = sqlite_costs[last][0] / sqlite_costs[first][0]
    print(
        f"ratio largest/smallest (min): SQLite {lite_ratio:.2f}, "
        f"PostgreSQL {pg_costs[last][0] / pg_costs[first][0]:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--writers", default="1,3")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--dir", default=None, help="where to put the databases")
    args = parser.parse_args()
    if not (PG_BIN / "initdb").exists():
        sys.exit(f"PostgreSQL binaries not found under {PG_BIN} (set $COALMINE_PG_BIN)")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, postgres() as admin:
        if not args.skip_writes:
            write_table(admin, Path(tmp), [int(w) for w in args.writers.split(",")], args.seconds)
        if not args.skip_eval:
            evaluation_table(admin, Path(tmp), [int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
