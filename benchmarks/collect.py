"""What the collectors take per second, on this machine, into a SQLite store.

1. Batch ingest: `Client.ingest` of N items in batches of B against the real control API
   (uvicorn on loopback), one client thread: items written per second.
2. KServe collector: logged calls (a request and a response event, binary-mode CloudEvents
   as KServe's logger sends them) from one client, one after the other: calls per second.
   Each completed call is one transaction, so this is the collector's per-call cost.
3. nginx access log: lines of Coalmine's format read from a file and written, per second.

Run: `python benchmarks/collect.py [--items 20000] [--calls 1000] [--lines 50000]`.
Numbers depend on the machine and its load; compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from coalmine import Client
from coalmine.collect.nginx_log import AccessLogCollector, FileTail
from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.collect.kserve_logger import KServeLogger
from tests.control_api import control_api

TOKEN = "bench-token"
SECRET = "bench-secret-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=50_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coalmine-bench-collect-"))
    config = parse_config({
        "store": {"url": f"sqlite:///{work / 'c.db'}"},
        "collect": {"kserve": {"secret": SECRET}},
        "models": [{"name": "iris", "routing": {"stable": "v1"},
                    "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}]}],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    rows: list[tuple[str, str, str]] = []
    with control_api(engine, TOKEN, config=config, max_body_bytes=8 << 20) as url:
        with Client(url, TOKEN) as client:
            start = time.perf_counter()
            for _ in range(100):
                client._call("GET", "/healthz")
            took = time.perf_counter() - start
            # the floor: any authenticated request to this API, doing nothing
            rows.append(("GET /api/v1/healthz (the API's floor)", "100",
                         f"{100 / took:,.0f} requests/s"))  # fmt: skip
            for batch in (1, 100, 1000):
                n = min(args.items, 2000) if batch == 1 else args.items
                items = [
                    {"request_id": f"b{batch}-{i}", "model": "iris", "version": "v1",
                     "latency_ms": 3.2, "prediction": [i % 3], "slices": {"c": "fr"}}
                    for i in range(n)
                ]  # fmt: skip
                start = time.perf_counter()
                client.ingest(items, batch_size=batch)
                took = time.perf_counter() - start
                rows.append((f"batch ingest, {batch} item(s)/request", f"{n:,}",
                             f"{n / took:,.0f} items/s"))  # fmt: skip
        with httpx.Client(timeout=10) as http:
            logger = KServeLogger(http, f"{url}/collect/kserve/{SECRET}", "iris")
            start = time.perf_counter()
            for i in range(args.calls):
                t = time.time()
                logger.send("request", f"k{i}", t, b'{"instances": [[1, 2, 3, 4]]}')
                logger.send("response", f"k{i}", t + 0.003, b'{"predictions": [1]}')
            took = time.perf_counter() - start
            rows.append(("KServe logger events (2 a call)", f"{args.calls:,}",
                         f"{args.calls / took:,.0f} calls/s"))  # fmt: skip
    access = work / "access.json"
    access.write_text("")
    tail = FileTail(access)
    line = (
        '{"ts":"%f","model":"iris","request_id":"n%d","upstream":"coalmine_iris_stable",'
        '"addr":"127.0.0.1:9","status":"200","upstream_status":"200","upstream_time":"0.004",'
        '"key":"u"}\n'
    )
    now = time.time()
    with access.open("a") as f:
        f.writelines(line % (now, i) for i in range(args.lines))
    collector = AccessLogCollector(engine, [tail])
    start = time.perf_counter()
    while collector.written < args.lines:
        collector.collect_once()
    took = time.perf_counter() - start
    rows.append(("nginx access log lines", f"{args.lines:,}", f"{args.lines / took:,.0f} lines/s"))
    engine.dispose()
    width = max(len(r[0]) for r in rows)
    print(f"{'source':<{width}}  {'n':>8}  rate")
    for name, n, rate in rows:
        print(f"{name:<{width}}  {n:>8}  {rate}")


if __name__ == "__main__":
    main()
