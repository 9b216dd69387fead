"""Benchmark (not a test): what the prediction log's writer process costs per row.

Starts a real `ProcessWriter` (its real child, `python -m coalmine.log.writer_child`) on a
fresh SQLite file and hands it the records of `--requests` requests shaped like
`benchmarks/gateway.py`'s (the plain JSON answer, the request body deferred for `inputs:
redacted`; a stable row and, unless --no-mirror, a shadow row sharing its request id), at
`--rate` requests/s (0: as fast as the loop goes), then flushes. It reports the child's CPU
per row over that window (utime + stime from /proc, its start-up excluded), the gateway
side's (this process: submit, tuples, pickled frames, pipe writes; the records' building
and the pacing loop's ticks measured alone and taken out), and the rows written. Then, for
the tree this runs on, what each stage of the child's work costs in process (pickle.loads,
record_of, finish_all, the row encoding, write_batch).

    PYTHONPATH=. .venv/bin/python benchmarks/log_writer.py [--requests 20000] [--rate 6000]
        [--no-mirror] [--tree BEFORE_DIR --tree AFTER_DIR] [--rounds 3]

With --tree (a directory holding the `coalmine` package, e.g. `git archive REV | tar -x -C
DIR`), each tree is measured in a process of its own with PYTHONPATH=tree, run from the
tree's directory (so its writer process runs that tree's code too), alternating A B, B A,
... for --rounds rounds; medians last.
The machine is shared: compare trees within one run, and read the load average printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from log_record import ANSWERS, REQUEST  # benchmarks/log_record.py, beside this file

from coalmine.config import LoggingConfig
from coalmine.log.answers import finish_all, raw_record
from coalmine.log.policy import InputPolicy
from coalmine.log.process_writer import ProcessWriter, record_of
from coalmine.log.record import RawRecord

_PROTOCOL, ANSWER, _ = ANSWERS["benchmark upstream (plain JSON)"]
CONFIG = LoggingConfig(inputs="redacted", redact_fields=["email", "user_id"])
SLICES = {"country": "DE"}
_TICK = os.sysconf("SC_CLK_TCK")


def records(policy: InputPolicy, i: int, mirror: bool) -> list[RawRecord]:
    """One request's records: production's stable call and its mirror copy."""
    rid, body, now = f"req-{i:012x}", policy.shape_later(REQUEST), time.time()
    roles = (("stable", "v1"), ("shadow", "v3")) if mirror else (("stable", "v1"),)
    call = ("plain", ANSWER, None, None, body, SLICES, 1000, None)
    return [raw_record(rid, "m", v, role, now, 1.2, 200, None, *call) for role, v in roles]


def child_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def run_once(requests: int, rate: float, mirror: bool) -> dict[str, Any]:
    policy = InputPolicy(CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/log.db"
        from coalmine.store.engine import open_engine

        open_engine(url).dispose()  # migrated, as the gateway's start leaves it
        writer = ProcessWriter(url, CONFIG)
        await writer.start()
        assert writer._process is not None
        pid = writer._process.pid
        loop = asyncio.get_running_loop()
        child0, own0, wall0 = child_cpu_s(pid), time.process_time(), loop.time()
        await _pace(
            requests, rate, lambda i: [writer.submit(r) for r in records(policy, i, mirror)]
        )
        await writer.flush()
        child1, own1, wall1 = child_cpu_s(pid), time.process_time(), loop.time()
        await writer.close()
        rows = requests * (2 if mirror else 1)
        # what is not the log's: building the records (the request path's) and the pacing
        # loop's own ticks, measured alone on a tenth of the requests and scaled
        tenth = max(1, requests // 10)
        start = time.process_time()
        await _pace(tenth, rate, lambda i: records(policy, i, mirror))
        other = (time.process_time() - start) * requests / tenth
        return {
            "rows": rows, "written": writer.written, "dropped": writer.dropped,
            "child_us": (child1 - child0) / rows * 1e6,
            "gateway_us": max(0.0, own1 - own0 - other) / rows * 1e6,
            "wall_s": wall1 - wall0,
        }  # fmt: skip


async def _pace(requests: int, rate: float, one: Any) -> None:
    """`one(i)` for each request, at `rate` a second (0: flat out, yielding to the loop)."""
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    while sent < requests:
        due = requests if rate <= 0 else min(requests, int((loop.time() - start) * rate) + 1)
        for i in range(sent, due):
            one(i)
        sent = due
        await asyncio.sleep(0 if rate <= 0 else 0.001)


def _timed(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def stages(requests: int, mirror: bool) -> dict[str, float]:
    """µs per row of each stage of the child's work, in this process (best of 3)."""
    from coalmine.log.process_writer import _raw_as_tuple
    from coalmine.store import predictions as store
    from coalmine.store.engine import open_engine

    policy = InputPolicy(CONFIG)
    raws = [r for i in range(requests) for r in records(policy, i, mirror)]
    frames = [
        pickle.dumps([_raw_as_tuple(r) for r in raws[i : i + 256]], pickle.HIGHEST_PROTOCOL)
        for i in range(0, len(raws), 256)
    ]
    tuples = [t for f in frames for t in pickle.loads(f)]
    recs = [record_of(t) for t in tuples]
    finished = finish_all(recs, policy, {})
    encode = getattr(store, "encode_row", store.encode_record)
    n = len(raws)
    out = {
        "pickle.loads": min(_timed(lambda: [pickle.loads(f) for f in frames]) for _ in range(3)),
        "record_of": min(_timed(lambda: [record_of(t) for t in tuples]) for _ in range(3)),
        "finish_all": min(_timed(lambda: finish_all(recs, policy, {})) for _ in range(3)),
        "encode": min(_timed(lambda: [encode(r) for r in finished]) for _ in range(3)),
    }
    times = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            engine = open_engine(f"sqlite:///{tmp}/log.db")
            start = time.process_time()
            for i in range(0, n, 500):
                store.write_batch(engine, finished[i : i + 500])
            times.append(time.process_time() - start)
            engine.dispose()
    out["write_batch (encode incl.)"] = min(times)
    return {name: seconds / n * 1e6 for name, seconds in out.items()}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"{name:34} {r['rows']:>7.0f} {r['written']:>7.0f} {r['dropped']:>7.0f} "
            f"{r['child_us']:>9.1f} {r['gateway_us']:>10.1f} {r['wall_s']:>7.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=6_000, help="requests/s; 0: flat out")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false")
    parser.add_argument("--tree", action="append", default=[], help="a tree to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one measurement, as JSON, for a parent comparing trees
        print(json.dumps(asyncio.run(run_once(args.requests, args.rate, args.mirror))))
        return
    head = (f"{'run':34} {'rows':>7} {'written':>7} {'dropped':>7} {'child µs':>9} "
            f"{'gateway µs':>10} {'wall s':>7}")  # fmt: skip
    rate = f"{args.rate:g} requests/s" if args.rate > 0 else "flat out"
    rows_each = "2 rows (stable + shadow)" if args.mirror else "1 row"
    print(f"{args.requests} requests at {rate}, {rows_each} each; µs per row. "
          f"Load average {_load()}\n")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    if not args.tree:
        print(_row("this tree", asyncio.run(run_once(args.requests, args.rate, args.mirror))))
    else:
        results: dict[str, list[dict[str, Any]]] = {tree: [] for tree in args.tree}
        for round_ in range(args.rounds):
            order = args.tree if round_ % 2 == 0 else args.tree[::-1]
            for tree in order:
                command = [sys.executable, __file__, "--one", "--requests", str(args.requests)]
                command += ["--rate", str(args.rate), *([] if args.mirror else ["--no-mirror"])]
                env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
                # run from the tree: the writer process is `python -m`, whose path starts at
                # the working directory (from this checkout it would run this checkout's code)
                out = subprocess.run(
                    command, env=env, cwd=tree, capture_output=True, text=True, check=True
                )
                result = json.loads(out.stdout.splitlines()[-1])
                results[tree].append(result)
                print(_row(f"{Path(tree).name} (round {round_ + 1})", result), flush=True)
        for tree, runs in results.items():
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(_row(f"{Path(tree).name} (median)", median))
    print(f"\nIn process, this tree (µs/row, best of 3), load average {_load()}:")
    for name, us in stages(min(args.requests, 10_000), args.mirror).items():
        print(f"  {name:28} {us:6.2f}")
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
