"""Gateway benchmark (not a test): Coalmine vs. nginx vs. the model hit directly.

One run, side by side, same load generator and concurrency (wrk, `../shared/perf-baseline/
post.lua`): the gateway pinned to core 0, wrk and the upstreams to core 1. Upstreams are the
trivial nginx "models" of `perf-baseline/upstreams.conf`, plus a Python shadow that answers
after 50 ms for the slow-shadow rows. Coalmine runs with a sticky 90/10 split, a 100%
mirror and the prediction log on (SQLite); nginx with `split_clients` + `mirror`. Two more
Coalmine rows give what the shadow costs the production path: the mirror off, and a dead
shadow (its URL a loopback port nothing listens on), each compared with the mirror-off row.

    .venv/bin/python benchmarks/gateway.py [--duration 10] [--connections 32]
        [--processes 2] [--json FILE] [--inputs redacted] [--servers protocol,aiohttp]
        [--with-sidecars]

`--with-sidecars` adds the like-for-like row for nginx: the same work with nginx as the data
plane, done Coalmine's supported way (README "Collecting predictions without the gateway"):
nginx carrying the `nginx` provider's file (sticky 90/10 `split_clients`, 100% mirror) and
locations, each version's URL a `python -m coalmine.collect.sidecar` in front of the same
upstream, the sidecars reporting through the batch ingest to a control API (`coalmine serve
--no-gateway --no-controller`) that writes the prediction log to SQLite with the same
`--inputs`. nginx, the three sidecars and the API run on the gateway's core; their CPU per
request is taken after the log has caught up (rows stop growing), and the rows written are
counted and printed beside the figure: a run that logged nothing prints no figure. Opt-in:
with its drain and one-connection run it adds about 2 x --duration + 10 s.

`--processes N` (N > 1) adds two rows: Coalmine with `gateway.processes: N` against nginx
with N workers, both spread over cores 0-1 (with wrk and the upstreams, on a 2-core machine).
`--json FILE` writes every run's figures (req/s, p50, p99, CPU us/req) and the ratios.
`--servers A,B` (`gateway.server`): the Coalmine rows run on A; each further server adds its
own rows (one process, and N processes with `--processes N`) to compare them in one run.
`--inputs` is the prediction log's `logging.inputs` (default redacted: it redacts `email`
and `user_id`, as the example configuration does and as issue 12's goal is stated).

Prints a table (with the load averages before and after it): req/s, p50, p99 at the
given concurrency, the gateway's CPU time per request (its process and children, user +
system, from /proc: steadier than req/s on a machine others use), ratios Coalmine/direct
and Coalmine/nginx, and the p50 added over the direct call at one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(os.environ.get("COALMINE_PERF_BASELINE", ROOT.parent / "shared" / "perf-baseline"))
PYTHON = sys.executable
GATEWAY_CORE, LOAD_CORE, ALL_CORES = "0", "1", "0-1"
MIRROR_OFF = "Coalmine (httptools), mirror off"
DEAD_SHADOW = "Coalmine (httptools), dead shadow"
SIDECARS = "nginx split+mirror + Coalmine sidecars (log on)"
ONE_PROCESS = "Coalmine (httptools client)"
REDACT_FIELDS = ["email", "user_id"]
# the sidecar run's nginx: the baseline's gateway-nginx.conf settings around the provider's
# include and location snippet
SIDECAR_NGINX = """worker_processes 1;
pid {pid};
error_log ./logs/gw-sidecars.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  include {include};
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{locations}  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, method: str = "GET") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url, method=method, data=b"{}" if method == "POST" else None
            )
            with urllib.request.urlopen(request, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None  # the gateway's CPU time per request
    requests: int = 0  # completed in the run


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children (nginx's worker), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pids = 0.0, [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{current}/task/{current}/children") as f:
                pids += [int(child) for child in f.read().split()]
        except OSError:
            continue  # exited meanwhile
    return total


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    name: str, url: str, connections: int, duration: int, gateway_pid: int | None = None
) -> Result:
    cpu_before = process_cpu_s(gateway_pid) if gateway_pid is not None else 0.0
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--latency", "-s", str(BASELINE / "post.lua"), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        print(f"  warning: {name}: {non2xx.group(1)} non-2xx responses", file=sys.stderr)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = None
    if gateway_pid is not None:
        cpu_us = (process_cpu_s(gateway_pid) - cpu_before) / max(requests, 1) * 1e6
    return Result(name, rps, p50, p99, cpu_us, requests)


class Stack:
    """The processes of one benchmark run; all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports = {name: free_port() for name in ("stable", "canary", "shadow", "slow")}

    def start(
        self, args: list[str], core: str, log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{log_name}.log", "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            ["taskset", "-c", core, *args], stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    def _nginx_conf(self, source: str, name: str, replacements: dict[str, str]) -> Path:
        text = (BASELINE / source).read_text()
        for old, new in replacements.items():
            text = text.replace(old, new)
        path = self.workdir / name
        path.write_text(text)
        return path

    def start_upstreams(self) -> None:
        p = self.ports
        conf = self._nginx_conf(
            "upstreams.conf",
            "upstreams.conf",
            {"127.0.0.1:9001": f"127.0.0.1:{p['stable']}",
             "127.0.0.1:9002": f"127.0.0.1:{p['canary']}",
             "127.0.0.1:9003": f"127.0.0.1:{p['shadow']}"},
        )  # fmt: skip
        self.start(["nginx", "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
                   LOAD_CORE, "upstreams")  # fmt: skip
        # the 50 ms shadow: a tiny aiohttp server (nginx-light has no delay module)
        self.start([PYTHON, str(Path(__file__)), "--slow-shadow", str(p["slow"])], LOAD_CORE,
                   "slow-shadow")  # fmt: skip
        for name in ("stable", "canary", "shadow", "slow"):
            wait_http(f"http://127.0.0.1:{p[name]}/", method="POST")

    def start_nginx_gateway(
        self, *, slow_shadow: bool, workers: int = 1
    ) -> tuple[subprocess.Popen[bytes], str]:
        p = self.ports
        port = free_port()
        name = "gw-nginx-slow" if slow_shadow else f"gw-nginx-{workers}"
        shadow = p["slow"] if slow_shadow else p["shadow"]
        conf = self._nginx_conf(
            "gateway-nginx.conf",
            f"{name}.conf",
            {"127.0.0.1:9001": f"127.0.0.1:{p['stable']}",
             "127.0.0.1:9002": f"127.0.0.1:{p['canary']}",
             "127.0.0.1:9003": f"127.0.0.1:{shadow}",
             "127.0.0.1:8080": f"127.0.0.1:{port}",
             "./run/gw-nginx.pid": f"./run/{name}.pid",
             "worker_processes 1;": f"worker_processes {workers};"},
        )  # fmt: skip
        process = self.start(
            ["nginx", "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
            GATEWAY_CORE if workers == 1 else ALL_CORES, name,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", method="POST")
        return process, url

    def start_coalmine(
        self, *, client: str, slow_shadow: bool, processes: int = 1, inputs: str = "full",
        server: str = "protocol", shadow_mode: str = "live",
    ) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
        """`shadow_mode`: live (or slow, with `slow_shadow`), off (mirror_share 0) or dead
        (the shadow's URL a port nothing listens on)."""
        p = self.ports
        port = free_port()
        name = f"coalmine-{client}-{server}{'-slow' if slow_shadow else ''}-{processes}"
        name += "" if shadow_mode == "live" else f"-{shadow_mode}"
        shadow = free_port() if shadow_mode == "dead" else p["slow" if slow_shadow else "shadow"]
        config = {
            "gateway": {"host": "127.0.0.1", "port": port, "processes": processes,
                        "upstream_client": client, "server": server},
            "logging": {"inputs": inputs, "redact_fields": REDACT_FIELDS},
            "store": {"url": f"sqlite:///{self.workdir / (name + '.db')}"},
            "models": [{
                "name": "m",
                "versions": [
                    {"name": "v1", "url": f"http://127.0.0.1:{p['stable']}"},
                    {"name": "v2", "url": f"http://127.0.0.1:{p['canary']}"},
                    {"name": "v3", "url": f"http://127.0.0.1:{shadow}"},
                ],
                "routing": {"stable": "v1", "canary": "v2", "canary_weight": 10,
                            "shadow": "v3", "mirror_share": 0 if shadow_mode == "off" else 100,
                            "sticky": {"header": "X-User-Id"}},
            }],
        }  # fmt: skip
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        coalmine = str(Path(PYTHON).parent / "coalmine")
        process = self.start(
            [coalmine, "gateway", "--config", str(path)],
            GATEWAY_CORE if processes == 1 else ALL_CORES, name,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz")
        return process, url

    def start_nginx_sidecars(
        self, *, inputs: str
    ) -> tuple[dict[str, subprocess.Popen[bytes]], str, Path]:
        """nginx routing as the `nginx` provider writes it, a logging sidecar in front of each
        upstream, and the control API they report to, all on the gateway's core; returns the
        processes by name (in start order), nginx's URL and the store's SQLite file.

        The controller is not run: the provider's file is rendered once from the stored route
        (what the controller would write), so no reload happens during the run."""
        from coalmine.config import NginxTraffic, parse_config
        from coalmine.providers.nginx import NginxProvider
        from coalmine.store.engine import open_engine
        from coalmine.store.routes import RouteRepository

        p, name = self.ports, "gw-sidecars"
        port, api_port = free_port(), free_port()
        sidecars = {"v1": free_port(), "v2": free_port(), "v3": free_port()}
        upstreams = {"v1": p["stable"], "v2": p["canary"], "v3": p["shadow"]}
        db, include = self.workdir / f"{name}.db", self.workdir / f"{name}-m.conf"
        main_conf, pid_file = self.workdir / f"{name}.conf", self.workdir / "run" / f"{name}.pid"
        token = secrets.token_urlsafe(24)
        config = {
            "api": {"host": "127.0.0.1", "port": api_port, "token": token},
            "logging": {"inputs": inputs, "redact_fields": REDACT_FIELDS},
            "store": {"url": f"sqlite:///{db}"},
            "models": [{
                "name": "m",
                "versions": [{"name": v, "url": f"http://127.0.0.1:{sidecars[v]}"}
                             for v in ("v1", "v2", "v3")],
                "routing": {"stable": "v1", "canary": "v2", "canary_weight": 10,
                            "shadow": "v3", "mirror_share": 100,
                            "sticky": {"header": "X-User-Id"}},
                "traffic": {"provider": "nginx", "config_path": str(include),
                            "main_config": str(main_conf), "pid_file": str(pid_file),
                            "prefix": str(self.workdir)},
            }],
        }  # fmt: skip
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        loaded = parse_config(config)
        model = loaded.model("m")
        assert isinstance(model.traffic, NginxTraffic)
        engine = open_engine(loaded.store.url)
        try:
            RouteRepository(engine).seed_from_config(loaded)  # as `coalmine serve` does
            route = RouteRepository(engine).get("m")
        finally:
            engine.dispose()
        assert route is not None
        provider = NginxProvider("m", model.routing.sticky, model.traffic)
        include.write_text(provider.render(route))
        locations = "".join(f"    {line}\n" for line in provider.location_snippet().splitlines())
        main_conf.write_text(
            SIDECAR_NGINX.format(pid=pid_file, include=include, port=port, locations=locations)
        )
        coalmine = str(Path(PYTHON).parent / "coalmine")
        processes = {"API": self.start(
            [coalmine, "serve", "--config", str(path), "--no-gateway", "--no-controller"],
            GATEWAY_CORE, f"{name}-api",
        )}  # fmt: skip
        api = f"http://127.0.0.1:{api_port}"
        wait_http(api + "/api/v1/healthz")
        for version, listen in sidecars.items():
            processes[f"sidecar {version}"] = self.start(
                [PYTHON, "-m", "coalmine.collect.sidecar", "--listen", f"127.0.0.1:{listen}",
                 "--upstream", f"http://127.0.0.1:{upstreams[version]}", "--model", "m",
                 "--version", version, "--api", api],
                GATEWAY_CORE, f"{name}-{version}", env={"COALMINE_TOKEN": token},
            )  # fmt: skip
        for listen in sidecars.values():
            wait_http(f"http://127.0.0.1:{listen}/", method="POST")
        processes["nginx"] = self.start(
            ["nginx", "-p", str(self.workdir), "-c", str(main_conf), "-g", "daemon off;"],
            GATEWAY_CORE, name,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/", method="POST")  # not an inference path: reported by no sidecar
        time.sleep(1.0)  # the sidecars' first route refresh (every 0.5 s) names their roles
        return processes, url, db


@dataclass
class Logged:
    """What the sidecar run wrote to the prediction log (and what each process spent)."""

    rows: int
    by_role: dict[str, int]
    paired: int  # shadow rows whose request id has a production row
    expected: int  # two rows a completed request: production and the shadow's copy
    drained_s: float  # from the end of the load until the rows stopped growing
    error: str | None = None  # the run did not complete
    cpu_us_by_process: dict[str, float] = field(default_factory=dict)  # per request


def count_rows(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return dict(conn.execute("SELECT role, count(*) FROM predictions GROUP BY role"))
    except sqlite3.OperationalError:
        return {}  # no table yet


def wait_logged(db: Path, expected: int, settle_s: float = 2.0, limit_s: float = 300.0) -> Logged:
    """Wait until the sidecars' reports stop adding rows (their reporters flush every 0.5 s),
    then count what was written."""
    start = time.monotonic()
    last, since = -1, start
    while time.monotonic() - start < limit_s:
        rows = sum(count_rows(db).values())
        if rows != last:
            last, since = rows, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            break
        time.sleep(0.25)
    drained = since - start
    with sqlite3.connect(db, timeout=30) as conn:
        paired = conn.execute(
            "SELECT count(*) FROM predictions s WHERE s.role = 'shadow' AND EXISTS (SELECT 1 "
            "FROM predictions p WHERE p.request_id = s.request_id AND p.role != 'shadow')"
        ).fetchone()[0]
    by_role = count_rows(db)
    return Logged(sum(by_role.values()), by_role, paired, expected, drained)


def run_sidecars(
    stack: Stack, connections: int, duration: int, inputs: str
) -> tuple[Result, Result, Logged]:
    """The nginx + sidecars run: its figures at `connections` (CPU per request counting nginx,
    the sidecars and the API, up to the log caught up), at one connection, and what it logged."""
    processes, url, db = stack.start_nginx_sidecars(inputs=inputs)
    try:
        before = {name: process_cpu_s(process.pid) for name, process in processes.items()}
        result = run_wrk(SIDECARS, url + "/v1/models/m:predict", connections, duration)
        logged = wait_logged(db, 2 * result.requests)
        per_request = 1e6 / max(result.requests, 1)
        logged.cpu_us_by_process = {
            name: (process_cpu_s(process.pid) - before[name]) * per_request
            for name, process in processes.items()
        }
        result.cpu_us = sum(logged.cpu_us_by_process.values())
        one = run_wrk(SIDECARS + " c1", url + "/v1/models/m:predict", 1, duration)
    finally:
        for process in reversed(processes.values()):  # nginx, the sidecars (they flush), API
            stack.stop(process)
    return result, one, logged


def describe_logged(logged: Logged) -> str:
    roles = ", ".join(f"{role} {n:,}" for role, n in sorted(logged.by_role.items()))
    cpu = ", ".join(f"{name} {us:.0f}" for name, us in logged.cpu_us_by_process.items())
    return (
        f"{logged.rows:,} rows logged ({roles}; {logged.paired:,} shadow rows paired with "
        f"production's) of {logged.expected:,} expected (2 a request); the log caught up "
        f"{logged.drained_s:.1f} s after the load; CPU us/req by process: {cpu}"
    )


def slow_shadow_server(port: int) -> None:
    import uvloop
    from aiohttp import web

    body = b'{"model":"m","version":"v3","prediction":[0.8871],"label":"pos"}'

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.05)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reference_for(label: str) -> str:
    """The nginx run a Coalmine row is compared with."""
    if "50 ms shadow" in label:
        return "nginx, 50 ms shadow"
    match = re.search(r"(\d+) processes", label)
    return f"nginx, {match.group(1)} workers" if match else "nginx split+mirror"


def table(rows: list[tuple[str, Result]], direct: Result, results: dict[str, Result]) -> str:
    head = (
        f"{'run':50} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} "
        f"{'/direct':>8} {'/nginx':>8}"
    )
    lines = [head, "-" * len(head)]
    for label, r in rows:
        reference = results[reference_for(label)]
        compared = label.startswith("Coalmine") or label == SIDECARS
        ratio_nginx = f"{r.rps / reference.rps:8.2f}" if compared else f"{'':8}"
        ratio_direct = f"{r.rps / direct.rps:8.2f}" if r is not direct else f"{'':8}"
        cpu = f"{r.cpu_us:10.1f}" if r.cpu_us is not None else f"{'':10}"
        lines.append(
            f"{label:50} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {cpu} "
            f"{ratio_direct} {ratio_nginx}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-d", "--duration", type=int, default=10)
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also compare N gateway processes with N nginx workers",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--inputs",
        default="redacted",  # issue 12's goal is stated with inputs redacted
        choices=["full", "redacted", "hashed", "none"],
        help="the prediction log's logging.inputs",
    )
    parser.add_argument(
        "--no-aiohttp", action="store_true", help="skip the aiohttp-client row (quicker)"
    )
    parser.add_argument(
        "--servers",
        default="protocol,aiohttp",
        help="gateway.server of the Coalmine rows, then of extra rows to compare (comma list)",
    )
    parser.add_argument(
        "--with-sidecars",
        action="store_true",
        help="add nginx split+mirror with Coalmine's logging sidecars and control API",
    )
    parser.add_argument("--slow-shadow", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slow_shadow:
        slow_shadow_server(args.slow_shadow)
        return 0
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install nginx-light wrk util-linux")
    d, c = args.duration, args.connections
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or any(s not in ("protocol", "aiohttp") for s in servers):
        sys.exit(f"--servers: expected protocol and/or aiohttp, got {args.servers!r}")
    main_server = servers[0]
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-bench-"))
    for sub in ("logs", "run"):
        (workdir / sub).mkdir()
    stack = Stack(workdir)
    rows: list[tuple[str, Result]] = []
    unloaded: list[tuple[str, Result]] = []
    logged: Logged | None = None
    try:
        stack.start_upstreams()
        direct_url = f"http://127.0.0.1:{stack.ports['stable']}"
        print(f"benchmarking in {workdir} (wrk -t1 -c{c} -d{d}s; gateway on core {GATEWAY_CORE})",
              file=sys.stderr)  # fmt: skip
        direct = run_wrk("direct", direct_url, c, d)
        rows.append(("direct upstream (stable)", direct))
        unloaded.append(("direct upstream (stable)", run_wrk("direct c1", direct_url, 1, d)))

        results: dict[str, Result] = {}
        coalmine_runs = [
            ("Coalmine (aiohttp client)", "aiohttp", False, 1, main_server),
            ("Coalmine (httptools client)", "httptools", False, 1, main_server),
            ("Coalmine (httptools), 50 ms shadow", "httptools", True, 1, main_server),
        ]
        if args.no_aiohttp:
            coalmine_runs.pop(0)
        n = args.processes
        if n > 1:
            coalmine_runs.append(
                (f"Coalmine (httptools), {n} processes", "httptools", False, n, main_server)
            )
        for other in servers[1:]:
            coalmine_runs.append(
                (f"Coalmine (httptools), {other} server", "httptools", False, 1, other)
            )
            if n > 1:
                coalmine_runs.append(
                    (f"Coalmine (httptools), {n} processes, {other} server", "httptools",
                     False, n, other)
                )  # fmt: skip
        for label, client, slow, processes, server in coalmine_runs:
            process, url = stack.start_coalmine(
                client=client, slow_shadow=slow, processes=processes, inputs=args.inputs,
                server=server,
            )  # fmt: skip
            results[label] = run_wrk(label, url + "/v1/models/m:predict", c, d, process.pid)
            if not slow and processes == 1:
                unloaded.append((label, run_wrk(label + " c1", url + "/v1/models/m:predict", 1, d)))
            stack.stop(process)  # graceful: flushes its log
        for label, mode in ((MIRROR_OFF, "off"), (DEAD_SHADOW, "dead")):
            process, url = stack.start_coalmine(
                client="httptools", slow_shadow=False, inputs=args.inputs, server=main_server,
                shadow_mode=mode,
            )  # fmt: skip
            results[label] = run_wrk(label, url + "/v1/models/m:predict", c, d, process.pid)
            stack.stop(process)
        nginx_runs = [("nginx split+mirror", False, 1), ("nginx, 50 ms shadow", True, 1)]
        if n > 1:
            nginx_runs.append((f"nginx, {n} workers", False, n))
        for label, slow, workers in nginx_runs:
            process, url = stack.start_nginx_gateway(slow_shadow=slow, workers=workers)
            results[label] = run_wrk(label, url + "/v1/models/m:predict", c, d, process.pid)
            if not slow and workers == 1:
                unloaded.append((label, run_wrk(label + " c1", url + "/v1/models/m:predict", 1, d)))
            stack.stop(process)
        if args.with_sidecars:
            try:
                sidecar_run, sidecar_c1, logged = run_sidecars(stack, c, d, args.inputs)
            except (RuntimeError, subprocess.CalledProcessError) as exc:  # keep the other rows
                logged = Logged(0, {}, 0, 0, 0.0, error=str(exc))
            if logged.rows > 0:  # a run that logged nothing gives no figure
                results[SIDECARS] = sidecar_run
                unloaded.append((SIDECARS, sidecar_c1))
    finally:
        stack.stop_all()
    order = [
        "nginx split+mirror", "Coalmine (aiohttp client)", "Coalmine (httptools client)", SIDECARS,
        *(f"Coalmine (httptools), {other} server" for other in servers[1:]),
        "nginx, 50 ms shadow", "Coalmine (httptools), 50 ms shadow", MIRROR_OFF, DEAD_SHADOW,
        f"nginx, {n} workers", f"Coalmine (httptools), {n} processes",
        *(f"Coalmine (httptools), {n} processes, {other} server" for other in servers[1:]),
    ]  # fmt: skip
    rows += [(label, results[label]) for label in order if label in results]
    nginx = results["nginx split+mirror"]
    load_after = load_average()
    print(f"\nAt {c} connections ({d} s each); load average (1, 5, 15 min) "
          f"{load_before} before, {load_after} after; Coalmine rows on gateway.server "
          f"{main_server} unless they say otherwise:")  # fmt: skip
    print(table(rows, direct, results))
    print("\nAdded p50 at 1 connection (gateway p50 - direct p50):")
    base = unloaded[0][1].p50_ms
    for label, r in unloaded:
        print(f"  {label:50} p50 {r.p50_ms:6.3f} ms   added {r.p50_ms - base:+.3f} ms")
    best = max(r.rps for label, r in results.items() if label.startswith("Coalmine (")
               and "shadow" not in label and "processes" not in label
               and label != MIRROR_OFF)  # fmt: skip
    one_proc = results["Coalmine (httptools client)"]
    print(f"\nIssue 12's targets: Coalmine/nginx req/s >= 1.0: {best / nginx.rps:.2f}; "
          f"CPU us/req <= nginx's: {one_proc.cpu_us or 0:.0f} vs {nginx.cpu_us or 0:.0f}; "
          f"p99 <= nginx's: {one_proc.p99_ms:.2f} vs {nginx.p99_ms:.2f} ms")  # fmt: skip
    off = results[MIRROR_OFF]
    print("Against the mirror off (req/s, CPU us/req): " + "; ".join(
        f"{name}: {results[label].rps / off.rps:.2f}, "
        f"{(results[label].cpu_us or 0) / (off.cpu_us or 1):.2f}"
        for name, label in (("live shadow", "Coalmine (httptools client)"),
                            ("50 ms shadow", "Coalmine (httptools), 50 ms shadow"),
                            ("dead shadow", DEAD_SHADOW))
    ))  # fmt: skip
    if logged is not None:
        print(sidecar_summary(logged, results))
    if n > 1:
        one, many = (
            results["Coalmine (httptools client)"],
            results[f"Coalmine (httptools), {n} processes"],
        )
        print(f"Scaling: {n} processes / 1 process: {many.rps / one.rps:.2f}; nginx "
              f"{results[f'nginx, {n} workers'].rps / nginx.rps:.2f}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                report(rows, unloaded, results, direct, args, load_before, load_after, logged),
                indent=2,
            )
            + "\n"
        )
    if logged is not None and logged.rows == 0:
        print(f"kept {workdir} for its gw-sidecars*.log files", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(
    rows: list[tuple[str, Result]], unloaded: list[tuple[str, Result]],
    results: dict[str, Result], direct: Result, args: argparse.Namespace,
    load_before: str, load_after: str, logged: Logged | None = None,
) -> dict[str, object]:  # fmt: skip
    """The figures of one benchmark run, for --json."""
    runs = []
    for label, r in rows:
        entry: dict[str, object] = {"run": label, **asdict(r)}
        entry["ratio_direct"] = r.rps / direct.rps
        if label.startswith("Coalmine"):
            reference = results[reference_for(label)]
            entry["reference"] = reference_for(label)
            entry["ratio_nginx"] = r.rps / reference.rps
            if r.cpu_us is not None and reference.cpu_us:
                entry["cpu_ratio_nginx"] = r.cpu_us / reference.cpu_us
        if label == SIDECARS:
            entry.update(sidecar_ratios(results))
        if label.startswith("Coalmine"):
            off = results.get(MIRROR_OFF)
            if off is not None and r is not off:
                entry["ratio_mirror_off"] = r.rps / off.rps
                if r.cpu_us is not None and off.cpu_us:
                    entry["cpu_ratio_mirror_off"] = r.cpu_us / off.cpu_us
        runs.append(entry)
    base = unloaded[0][1].p50_ms
    extra: dict[str, object] = {} if logged is None else {"sidecars_logged": asdict(logged)}
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": args.duration, "connections": args.connections,
        "processes": args.processes, "servers": args.servers.split(","),
        "load_average_before": load_before, "load_average_after": load_after,
        "runs": runs,
        "one_connection": [
            {"run": label, "p50_ms": r.p50_ms, "added_p50_ms": r.p50_ms - base}
            for label, r in unloaded
        ],
        **extra,
    }  # fmt: skip


def sidecar_ratios(results: dict[str, Result]) -> dict[str, float]:
    """The nginx + sidecars run against nginx alone and Coalmine's one process."""
    run, out = results[SIDECARS], {}
    for key, label in (("nginx", "nginx split+mirror"), ("coalmine_1_process", ONE_PROCESS)):
        other = results.get(label)
        if other is None:
            continue
        out[f"ratio_{key}"] = run.rps / other.rps
        if run.cpu_us is not None and other.cpu_us:
            out[f"cpu_ratio_{key}"] = run.cpu_us / other.cpu_us
    return out


def sidecar_summary(logged: Logged, results: dict[str, Result]) -> str:
    if SIDECARS not in results:
        why = logged.error or f"0 rows of {logged.expected:,} expected"
        return f"nginx + Coalmine sidecars: NOTHING LOGGED ({why}): no figure"
    run, ratios = results[SIDECARS], sidecar_ratios(results)
    lost = 1 - logged.rows / max(logged.expected, 1)
    warning = f" LOSSY: {lost:.1%} of the rows missing;" if lost > 0.001 else ""
    return (
        f"nginx + Coalmine sidecars (log on):{warning} {describe_logged(logged)}.\n"
        f"  req/s {ratios.get('ratio_nginx', 0):.2f}x nginx alone, "
        f"{ratios.get('ratio_coalmine_1_process', 0):.2f}x Coalmine's 1 process; "
        f"CPU {run.cpu_us or 0:.0f} us/req (nginx + 3 sidecars + API) = "
        f"{ratios.get('cpu_ratio_nginx', 0):.2f}x nginx alone, "
        f"{ratios.get('cpu_ratio_coalmine_1_process', 0):.2f}x Coalmine's 1 process"
    )


if __name__ == "__main__":
    sys.exit(main())
