"""What one upstream call's metrics cost the gateway, per way of sharing them across
processes (the choice behind gateway/multiproc.py).

- plain: the gateway's own integers (one process, or each process answering for itself);
- write-through: the same plus the count, latency sum and bucket written into the process's
  memory-mapped file (prometheus_client's multi-process format), which every scrape merges;
- prometheus_client multi-process: a Counter and a Histogram child with
  $PROMETHEUS_MULTIPROC_DIR set, each value behind a lock and written to the same format.

Each variant runs in its own interpreter (the last one needs the variable before import).
Run: `python benchmarks/gateway_metrics.py [--calls 200000]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_VARIANT = """
import os, sys, timeit
from pathlib import Path
sys.path.insert(0, {root!r})
variant, calls, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
from coalmine.gateway import metrics, multiproc
if variant == "write-through":
    multiproc.enable(directory)
if variant == "client":
    from prometheus_client import Counter, Histogram
    labels = ["model", "version", "role"]
    c = Counter("bench_requests", "h", labels).labels("m", "v", "stable")
    h = Histogram("bench_latency_seconds", "h", labels,
                  buckets=metrics.LATENCY_BUCKETS).labels("m", "v", "stable")
    def call():
        c.inc()
        h.observe(0.003)
else:
    role = metrics.RoleMetrics("m", "v", "stable")
    def call():
        role.observe(0.003, None)
best = min(timeit.repeat(call, number=calls, repeat=5)) / calls
print(f"{{best * 1e6:.2f}}")
"""

VARIANTS = [
    ("plain integers (before)", "plain"),
    ("write-through to the shared file (now)", "write-through"),
    ("prometheus_client multi-process values", "client"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    code = _VARIANT.format(root=str(ROOT))
    rows = []
    for title, variant in VARIANTS:
        with tempfile.TemporaryDirectory() as directory:
            env = dict(os.environ)
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            if variant == "client":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            out = subprocess.run(
                [sys.executable, "-c", code, variant, str(args.calls), directory],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append((title, float(out.stdout.strip())))
    print(f"one call's metrics, best of 5 x {args.calls:,} calls (load {os.getloadavg()[0]:.2f})")
    print("| way | µs per call | × plain |")
    print("|---|---|---|")
    for title, micros in rows:
        print(f"| {title} | {micros:.2f} | {micros / rows[0][1]:.1f} |")


if __name__ == "__main__":
    main()
