"""A/B benchmark (not a test): one gateway configuration run from two source trees in turn.

For a change's before/after on a machine others use: the upstreams of `gateway.py` start
once, then the Coalmine gateway (httptools client, the sticky 90/10 split, a 100% mirror,
the prediction log on SQLite, pinned to core 0) runs from tree A and tree B alternately
(A B, B A, ...), `--rounds` times for each `--inputs` mode, each under wrk for `--duration`
seconds at `--connections`. CPU per request is split into the gateway's own process and its
children (the log's writer process), from /proc; the table gives every run and the medians.

    .venv/bin/python benchmarks/gateway_ab.py BEFORE_TREE AFTER_TREE \\
        [--inputs redacted,full] [--rounds 4] [--duration 5] [--connections 32]

A tree is a directory holding the `coalmine` package (e.g. `git archive REV | tar -x -C
DIR`); it is put first on the gateway's PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import gateway as bench  # benchmarks/gateway.py, beside this file


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of `pid` itself and of its children."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p: int) -> float:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    return one(pid), sum(one(c) for c in children)


def run(
    stack: bench.Stack, tree: str, inputs: str, duration: int, connections: int
) -> tuple[float, float, float]:
    """req/s, and CPU µs per request of the gateway process and of its children."""
    os.environ["PYTHONPATH"] = tree
    process, url = stack.start_coalmine(client="httptools", slow_shadow=False, inputs=inputs)
    try:
        own0, kids0 = cpu_split(process.pid)
        out = subprocess.run(
            ["taskset", "-c", bench.LOAD_CORE, "wrk", "-t1", f"-c{connections}",
             f"-d{duration}s", "-s", str(bench.BASELINE / "post.lua"),
             url + "/v1/models/m:predict"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        own1, kids1 = cpu_split(process.pid)
    finally:
        stack.stop(process)
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, (own1 - own0) / n * 1e6, (kids1 - kids0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--inputs", default="redacted,full")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-d", "--duration", type=int, default=5)
    parser.add_argument("-c", "--connections", type=int, default=32)
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    modes = args.inputs.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-ab-"))
    for sub in ("logs", "run"):
        (workdir / sub).mkdir()
    stack = bench.Stack(workdir)
    results: list[tuple[str, str, float, float, float]] = []
    loads = [bench.load_average()]
    print(f"{'inputs':9} {'tree':7} {'req/s':>8} {'gateway':>8} {'writer':>8} {'total':>8}"
          f"  (CPU µs/req)  load 1 min")  # fmt: skip
    try:
        stack.start_upstreams()
        for r in range(args.rounds):
            for inputs in modes:
                for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    load = os.getloadavg()[0]
                    rps, own, kids = run(stack, trees[name], inputs, args.duration,
                                         args.connections)  # fmt: skip
                    results.append((inputs, name, rps, own, kids))
                    print(f"{inputs:9} {name:7} {rps:8.0f} {own:8.1f} {kids:8.1f} "
                          f"{own + kids:8.1f}  {'':12}  {load:.2f}", flush=True)  # fmt: skip
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    loads.append(bench.load_average())
    print(f"\nMedians of {args.rounds} runs each; load average (1, 5, 15 min) {loads[0]} before, "
          f"{loads[1]} after:")  # fmt: skip
    for inputs in modes:
        for name in ("before", "after"):
            rows = [x for x in results if x[:2] == (inputs, name)]
            med = [statistics.median(x[i] for x in rows) for i in (2, 3, 4)]
            total = statistics.median(x[3] + x[4] for x in rows)
            print(f"{inputs:9} {name:7} {med[0]:8.0f} {med[1]:8.1f} {med[2]:8.1f} {total:8.1f}")


if __name__ == "__main__":
    main()
