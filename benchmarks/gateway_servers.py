"""A/B benchmark (not a test): the gateway on `gateway.server` protocol vs aiohttp, alternating.

The upstreams of `gateway.py` start once; then the same Coalmine gateway (httptools client,
sticky 90/10 split, 100% mirror, log on SQLite with `--inputs`) runs on each server in turn
(protocol aiohttp, aiohttp protocol, ...) for `--rounds` rounds, under wrk at `--connections`
for `--duration` seconds, then at one connection for the added p50. CPU per request from
/proc: the gateway's processes and their children (the log writers) together, and the
gateway process itself. Prints every run and the medians, with the load averages.

    .venv/bin/python benchmarks/gateway_servers.py [--rounds 4] [--duration 5]
        [--connections 32] [--processes 1] [--inputs redacted]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import gateway as bench  # benchmarks/gateway.py, beside this file

SERVERS = ("protocol", "aiohttp")


def wrk(url: str, connections: int, duration: int) -> tuple[float, int, float, float]:
    """req/s, requests, p50 ms, p99 ms."""
    out = subprocess.run(
        ["taskset", "-c", bench.LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--latency", "-s", str(bench.BASELINE / "post.lua"), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = bench._ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = bench._ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return rps, requests, p50, p99


def own_cpu_s(pid: int) -> float:
    return bench.process_cpu_s(pid) - sum(
        bench.process_cpu_s(int(child))
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-d", "--duration", type=int, default=5)
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--inputs", default="redacted", choices=["full", "redacted", "hashed", "none"]
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-servers-"))
    for sub in ("logs", "run"):
        (workdir / sub).mkdir()
    stack = bench.Stack(workdir)
    runs: dict[str, list[tuple[float, ...]]] = {s: [] for s in SERVERS}
    load_before = bench.load_average()
    head = "server    req/s  total us/req  gateway process us/req  p50 ms  p99 ms  p50 c1 ms"
    print(head)
    try:
        stack.start_upstreams()
        for i in range(args.rounds):
            for server in SERVERS if i % 2 == 0 else SERVERS[::-1]:
                process, url = stack.start_coalmine(
                    client="httptools", slow_shadow=False, processes=args.processes,
                    inputs=args.inputs, server=server,
                )  # fmt: skip
                url += "/v1/models/m:predict"
                total0, own0 = bench.process_cpu_s(process.pid), own_cpu_s(process.pid)
                rps, n, p50, p99 = wrk(url, args.connections, args.duration)
                total1, own1 = bench.process_cpu_s(process.pid), own_cpu_s(process.pid)
                c1 = wrk(url, 1, args.duration)[2]
                stack.stop(process)
                row = (rps, (total1 - total0) / n * 1e6, (own1 - own0) / n * 1e6, p50, p99, c1)
                runs[server].append(row)
                print(f"{server:8} {row[0]:7.0f} {row[1]:13.1f} {row[2]:23.1f} "
                      f"{row[3]:7.2f} {row[4]:7.2f} {row[5]:10.3f}", flush=True)  # fmt: skip
    finally:
        stack.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = bench.load_average()
    print(f"\nmedians ({args.rounds} runs each, {args.processes} process(es), "
          f"c{args.connections}, {args.duration} s; load average {load_before} before, "
          f"{load_after} after):")  # fmt: skip
    print(head)
    for server, rows in runs.items():
        m = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(f"{server:8} {m[0]:7.0f} {m[1]:13.1f} {m[2]:23.1f} {m[3]:7.2f} {m[4]:7.2f} "
              f"{m[5]:10.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
