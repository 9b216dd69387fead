"""Upstream-client benchmark (not a test): CPU per upstream call, and per mirror copy.

The gateway's cost per request is mostly its two upstream calls (production and the mirror
copy); this measures that part alone, in one process pinned to core 0, against the trivial
nginx "models" of `../shared/perf-baseline/upstreams.conf` pinned to core 1:

- `post`: `client.post` of the benchmark's ~200-byte JSON body with a browser-sized set of
  end-to-end headers, by N closed-loop callers (N = 1 and 16);
- `mirror`: the same calls made by the shadow mirror (`ShadowMirror.offer` of a copy, the
  workers' call and a record handed to a sink that drops it), 16 copies queued or in flight
  at all times (the default 16 workers), capped like-for-like at 16: the difference from
  `post` at 16 is the mirror's own cost per copy.

CPU µs per call is this process's user + system time over the calls it made (steadier than
calls/s on a machine others use: compare the rows of one run, and mind the load average).

    .venv/bin/python benchmarks/upstream_client.py [--duration 5] [--clients httptools,aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import Stack, load_average

from coalmine.gateway.mirror import ShadowMirror
from coalmine.gateway.protocols import V1
from coalmine.gateway.upstream.base import UpstreamClient
from coalmine.gateway.upstream.registry import make_client
from coalmine.log.record import PredictionRecord

BODY = (
    b'{"instances":[{"user_id":"u-000123","features":[0.12,0.55,0.91,0.33,0.07,0.61,0.48,'
    b'0.29,0.84,0.15],"country":"DE","device":"ios","session_len":371,'
    b'"ts":"2024-05-01T12:00:00Z"}]}'
)
HEADERS = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) benchmark"),
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("X-User-Id", "user-123"),
    ("Authorization", "Bearer 0123456789abcdef"),
    ("X-Request-ID", "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"),
]


class NullSink:
    """A prediction sink that counts and drops: only the mirror's own cost is measured."""

    def __init__(self) -> None:
        self.records = 0
        self.target = 0
        self.reached = asyncio.Event()

    def submit(self, record: PredictionRecord) -> None:
        self.records += 1
        if self.records >= self.target:
            self.reached.set()

    async def wait_for(self, records: int) -> None:
        self.target = records
        self.reached.clear()
        if self.records < records:
            await self.reached.wait()


class Route:
    """What a ShadowJob reads of a compiled route."""

    model = "m"
    shadow = stable = "v3"
    scores_field = None
    weight_bp = 1000
    rollout_id = None

    class _Metrics:
        def observe(self, elapsed: float, error_class: str | None) -> None:
            pass

    shadow_metrics = baseline_metrics = paired_metrics = _Metrics()


async def _posts(client: UpstreamClient, url: str, callers: int, duration: float) -> int:
    done = 0
    deadline = time.monotonic() + duration

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            response = await client.post(url, BODY, HEADERS, 5.0)
            assert response.status == 200, response.status
            done += 1

    await asyncio.gather(*(caller() for _ in range(callers)))
    return done


async def _copies(client: UpstreamClient, url: str, window: int, duration: float) -> int:
    """Copies offered so that `window` are always queued or in flight."""
    sink = NullSink()
    mirror = ShadowMirror(client, sink, queue_size=4 * window, workers=16, timeout_s=5.0)  # type: ignore[arg-type]
    mirror.start()
    route: Any = Route()
    deadline = time.monotonic() + duration
    offered = 0
    with contextlib.ExitStack() as serving:
        for _ in range(window - 1):  # the copies' cap: production with `window` in flight
            serving.enter_context(mirror.serving("m"))
        while time.monotonic() < deadline:
            while offered - sink.records < window:
                mirror.offer(route, V1, url, BODY, HEADERS, "id", None, {})
                offered += 1
            await sink.wait_for(sink.records + 1)
        await sink.wait_for(offered)
    await mirror.close()
    assert not mirror.dropped
    return sink.records


def measure(client_name: str, row: str, url: str, n: int, duration: float) -> tuple[int, float]:
    async def run() -> tuple[int, float]:
        client = make_client(client_name)
        try:
            warm = _posts if row == "post" else _copies
            await warm(client, url, n, 0.5)
            cpu = time.process_time()
            calls = await warm(client, url, n, duration)
            return calls, time.process_time() - cpu
        finally:
            await client.close()

    return uvloop.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--clients", default="httptools,aiohttp")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-bench-client-"))
    for sub in ("logs", "run"):
        (workdir / sub).mkdir()
    stack = Stack(workdir)
    rows = []
    try:
        stack.start_upstreams()
        url = f"http://127.0.0.1:{stack.ports['shadow']}/v1/models/m:predict"
        for name in args.clients.split(","):
            for row, n in (("post", 1), ("post", 16), ("mirror", 16)):
                calls, cpu = measure(name, row, url, n, args.duration)
                rows.append((name, row, n, calls / args.duration, cpu / calls * 1e6))
    finally:
        stack.stop_all()
    print(
        f"\n{args.duration:g} s a row; load average (1, 5, 15 min) {load_before} before, "
        f"{load_average()} after:"
    )
    head = f"{'client':10} {'row':7} {'in flight':>9} {'calls/s':>9} {'CPU us/call':>11}"
    print(head)
    print("-" * len(head))
    for name, row, n, rate, cpu_us in rows:
        print(f"{name:10} {row:7} {n:9d} {rate:9.0f} {cpu_us:11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
