"""Soak: mixed traffic for several minutes through a real `coalmine serve`, with a good
rollout promoted, a bad one rolled back, and faults injected on a schedule.

    python benchmarks/soak.py [--minutes 10] [--rate 150]

Real parts: `coalmine serve` (gateway, control API, controller, SQLite store) started by
`LocalCoalmine`, scikit-learn models served by `serve-model` processes, a load generator of
a few threads with sticky user ids and slice headers, labels fed back a moment later.

Faults, in turn, every `minutes × 6` seconds: the store locked by another writer for 5 s; a
flood of 200 idle connections held 10 s; the running candidate frozen (SIGSTOP) for 3 s;
a candidate killed mid-canary (its rollout must roll back).

Every 10 s it prints: serve's RSS and open file descriptors, requests sent and answered,
production-path errors (anything but 200), client p50/p99, rows the log dropped. At the end:
requests answered whose row is missing from the log (must be 0), and the rollouts' outcomes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from coalmine.testing import LocalCoalmine, fast_spec, serve_estimator

X, Y = load_iris(return_X_y=True)


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    errors: int = 0


class Load:
    """Threads sending requests at `rate`/s; every answered request id is kept."""

    def __init__(self, gateway: str, rate: float, threads: int = 6) -> None:
        self.gateway, self.rate, self.threads = gateway, rate, threads
        self.window = Window()
        self.lock = threading.Lock()
        self.answered: list[tuple[str, int]] = []  # (request id, label)
        self.total_sent = self.total_errors = 0
        self.stop = threading.Event()
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]  # fmt: skip

    def start(self) -> Load:
        for w in self.workers:
            w.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        gap = self.threads / self.rate
        with httpx.Client(base_url=self.gateway, timeout=15) as http:
            next_at = time.monotonic()
            while not self.stop.is_set():
                i = rng.randrange(len(X))
                headers = {"X-User-Id": f"u{rng.randrange(5000)}",
                           "X-Region": rng.choice(["north", "south", "east"])}  # fmt: skip
                t0 = time.monotonic()
                try:
                    r = http.post("/v1/models/iris:predict",
                                  json={"instances": [X[i].tolist()]}, headers=headers)  # fmt: skip
                    status, rid = r.status_code, r.headers.get("X-Request-ID", "")
                except httpx.HTTPError:
                    status, rid = 0, ""
                elapsed = (time.monotonic() - t0) * 1000
                with self.lock:
                    self.window.sent += 1
                    self.total_sent += 1
                    self.window.latencies.append(elapsed)
                    if status == 200:
                        self.answered.append((rid, int(Y[i])))
                    else:
                        self.window.errors += 1
                        self.total_errors += 1
                next_at += gap
                time.sleep(max(0.0, next_at - time.monotonic()))

    def take_window(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window


def _labels(load: Load, gateway: str, token: str | None) -> None:
    """Labels for two thirds of the answered requests, about a second after the answer."""
    done = 0
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=gateway, timeout=15, headers=headers) as http:
        while not load.stop.is_set():
            time.sleep(1.0)
            with load.lock:
                batch = load.answered[done:]
            done += len(batch)
            items = [{"request_id": r, "label": y} for k, (r, y) in enumerate(batch) if k % 3]
            for start in range(0, len(items), 500):
                with contextlib.suppress(httpx.HTTPError):
                    http.post("/v1/feedback", json={"items": items[start : start + 500]})


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _rss_fds(pid: int) -> tuple[float, int]:
    rss = fds = 0
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            fds += p.num_fds()
    return rss / 2**20, fds


def _dropped(gateway: str) -> float:
    try:
        text = httpx.get(gateway + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return float("nan")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("coalmine_log_dropped_total"))  # fmt: skip


def _lock_store(db: Path, seconds: float) -> None:
    """Another writer holds the SQLite store's write lock for `seconds`."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.rollback()
    finally:
        conn.close()


def _flood(host: str, port: int, n: int, seconds: float) -> None:
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            socks.append(socket.create_connection((host, port), timeout=2))
    time.sleep(seconds)
    for s in socks:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=150.0)
    args = parser.parse_args()
    duration = args.minutes * 60
    fault_every = max(20.0, args.minutes * 6)

    current = LogisticRegression(max_iter=500).fit(X, Y)
    good = LogisticRegression(C=0.5, max_iter=500).fit(X, Y)
    bad = make_pipeline(ColumnTransformer([("sepal", "passthrough", [0, 1])]),
                        LogisticRegression(max_iter=500)).fit(X, Y)  # fmt: skip
    spec = fast_spec(shadow={"min_duration": "20s", "max_duration": "2m"},
                     canary={"steps": [10, 50, 100], "min_duration": "15s",
                             "max_duration": "2m"})  # fmt: skip
    with contextlib.ExitStack() as stack:
        v1 = stack.enter_context(serve_estimator(current, "iris", "v1"))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coalmine-soak-")))
        cm = stack.enter_context(LocalCoalmine({"iris": {"v1": v1}}, workdir=work))
        assert cm.pid is not None
        client = cm.client()
        load = Load(cm.gateway_url, args.rate).start()
        threading.Thread(target=_labels, args=(load, cm.gateway_url, None), daemon=True).start()
        candidates = iter([("v2", good, "promoted"), ("v3", bad, "rolled_back"),
                           ("v4", good, "killed"), ("v5", good, "promoted")])  # fmt: skip
        outcomes: list[tuple[str, str, str]] = []
        promoted: list[Any] = []
        rollout: Any = None
        server: Any = None
        expected = ""
        faults = ["store locked 5 s", "200 idle connections 10 s", "candidate frozen 3 s"]
        injected: list[str] = []
        start = time.monotonic()
        next_fault = start + fault_every
        next_row = start + 10
        dropped0 = _dropped(cm.gateway_url)
        print(
            "  t s | RSS MB |  fds |  sent | errors | p50 ms | p99 ms | dropped | rollout"
            "            | event"
        )
        gateway = httpx.URL(cm.gateway_url)
        while time.monotonic() - start < duration:
            event = ""
            status = rollout.status() if rollout is not None else None
            if status is not None and status["phase"] in ("promoted", "rolled_back", "aborted"):
                outcomes.append((status["candidate"], expected, status["phase"]))
                event = f"{status['candidate']} {status['phase']}"
                rollout = None
                if status["phase"] == "promoted":
                    promoted.append(server)  # it serves production now: keep it running
                else:
                    server.stop()
            if rollout is None:
                nxt = next(candidates, None)
                if nxt is not None:
                    version, model, expected = nxt
                    server = serve_estimator(model, "iris", version)
                    rollout = client.start_rollout("iris", version, server.url, spec)
                    event += f" start {version}"
            now = time.monotonic()
            if now >= next_fault:
                next_fault = now + fault_every
                phase = status["phase"] if status else ""
                if expected == "killed" and phase == "canary" and server is not None:
                    os.kill(server.pid, signal.SIGKILL)
                    injected.append("candidate killed mid-canary")
                    expected = "rolled_back"
                else:
                    kind = faults[len(injected) % len(faults)]
                    if kind.startswith("store"):
                        threading.Thread(target=_lock_store, args=(cm.db_path, 5),
                                         daemon=True).start()  # fmt: skip
                    elif kind.startswith("200"):
                        threading.Thread(target=_flood, args=(gateway.host, gateway.port, 200, 10),
                                         daemon=True).start()  # fmt: skip
                    elif server is not None and server.process.poll() is None:
                        os.kill(server.pid, signal.SIGSTOP)
                        threading.Timer(3, os.kill, (server.pid, signal.SIGCONT)).start()
                        if phase == "canary":  # a hung canary is a failing one
                            expected = f"{expected} or rolled_back (frozen in canary)"
                    injected.append(kind)
                event += f" fault: {injected[-1]}"
            if now >= next_row or event:
                phase_now = ""
                if rollout is not None:
                    current_status = rollout.status()
                    phase_now = f"{current_status['candidate']} {current_status['phase']}"
                w = load.take_window()
                rss, fds = _rss_fds(cm.pid)
                lat = np.array(w.latencies) if w.latencies else np.array([float("nan")])
                print(
                    f"{now - start:5.0f} | {rss:6.0f} | {fds:4d} | {w.sent:5d} | {w.errors:6d} | "
                    f"{np.percentile(lat, 50):6.2f} | {np.percentile(lat, 99):6.1f} | "
                    f"{_dropped(cm.gateway_url) - dropped0:7.0f} | {phase_now:18s} | "
                    f"{event.strip()}",
                    flush=True,
                )
                next_row = now + 10
            time.sleep(0.5)
        load.stop.set()
        for w in load.workers:
            w.join(20)
        if rollout is not None:
            with contextlib.suppress(Exception):
                client.abort(rollout.id, "soak over")
        if server is not None:
            server.stop()
        answered = {rid for rid, _ in load.answered}
        cm.stop()  # SIGTERM: the gateway drains and flushes its log
        for old in promoted:
            old.stop()
        conn = sqlite3.connect(cm.db_path)
        logged = {r for (r,) in conn.execute(
            "SELECT request_id FROM predictions WHERE role IN ('stable', 'canary')")}  # fmt: skip
        conn.close()
    print()
    print(
        f"requests sent {load.total_sent}, answered 200 {len(answered)}, "
        f"production-path errors {load.total_errors}"
    )
    print(f"answered but missing from the log: {len(answered - logged)}")
    print(f"faults injected: {len(injected)} ({', '.join(injected)})")
    for version, want, got in outcomes:
        print(f"rollout {version}: expected {want}, got {got}")


if __name__ == "__main__":
    main()
