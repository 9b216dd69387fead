"""A real nginx master (non-daemon child, own prefix/pid/logs in a tmp dir, free port) in
front of real aiohttp upstreams on loopback, for the nginx provider's tests."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from coalmine.config import NginxTraffic, StickyKey
from coalmine.providers.nginx import NginxProvider

NGINX = Path("/usr/sbin/nginx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Upstreams:
    """aiohttp servers answering their own name; each remembers the request ids it saw."""

    ports: dict[str, int] = field(default_factory=dict)
    seen: dict[str, list[str]] = field(default_factory=dict)
    # a name in `held` answers only once its threading.Event is set (a hung version)
    held: dict[str, threading.Event] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@contextmanager
def upstreams(*names: str) -> Iterator[Upstreams]:
    ups = Upstreams()
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    def handler(name: str) -> web.RequestHandler:
        async def answer(request: web.Request) -> web.Response:
            await request.read()
            ups.seen[name].append(request.headers.get("X-Request-Id", ""))
            hold = ups.held.get(name)
            if hold is not None:
                await asyncio.to_thread(hold.wait, 30)
            return web.Response(text=name)

        return answer  # type: ignore[return-value]

    async def start() -> None:
        for name in names:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler(name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            ups.ports[name] = port
            ups.seen[name] = []

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield ups
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@dataclass
class Nginx:
    prefix: Path
    port: int
    settings: NginxTraffic
    process: subprocess.Popen[bytes]

    def provider(self, model: str, sticky: StickyKey | None) -> NginxProvider:
        return NginxProvider(model, sticky, self.settings)

    def get(self, user: str | None = None, *, fresh: bool = True) -> str:
        """One request through nginx (a new connection: it lands on the current workers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(
                "POST", "/predict", body=b"{}", headers={"X-User-Id": user} if user else {}
            )
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status == 200, (response.status, body)
            return body
        finally:
            conn.close()

    def tally(self, users: list[str]) -> Counter[str]:
        return Counter(self.get(u) for u in users)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""


def main_config(prefix: Path, port: int, include: Path, locations: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    body = "\n".join("    " + line for line in locations.splitlines())
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} notice;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {include};\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n{body}\n  }}\n}}\n"
    )


@contextmanager
def running_nginx(tmp: Path, first: str, locations: str, http_extra: str = "") -> Iterator[Nginx]:
    """nginx serving `locations`, including a model file that starts as `first`; `http_extra`
    goes into the http block (e.g. a log_format)."""
    if not NGINX.exists():
        raise FileNotFoundError(NGINX)
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    include = prefix / "coalmine-iris.conf"
    include.write_text(first)
    port = free_port()
    main = prefix / "nginx.conf"
    text = main_config(prefix, port, include, locations)
    main.write_text(text.replace("http {\n", "http {\n  " + http_extra + "\n", 1))
    settings = NginxTraffic(
        provider="nginx",
        config_path=include,
        main_config=main,
        pid_file=prefix / "nginx.pid",
        nginx_binary=NGINX,
        prefix=prefix,
    )
    process = subprocess.Popen(
        [str(NGINX), "-p", str(prefix), "-c", str(main)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    nginx = Nginx(prefix, port, settings, process)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {nginx.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                if (prefix / "nginx.pid").exists():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {nginx.error_log()}")
            time.sleep(0.05)
        yield nginx
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(prefix / "tmp", ignore_errors=True)


def reloads(nginx: Nginx) -> int:
    """How many times the master re-read its config (it logs each SIGHUP at notice)."""
    return nginx.error_log().count(": reconfiguring")


def settled(nginx: Nginx) -> bool:
    """Every worker of an older config has exited: new connections meet the new split."""
    log = nginx.error_log()
    return log.count("exited with code") >= log.count(": reconfiguring")


def placeholder_settings(tmp: Path) -> NginxTraffic:
    """Settings for a provider used only to render (before nginx runs)."""
    return NginxTraffic(
        provider="nginx", config_path=tmp / "x", main_config=tmp / "y", pid_file=tmp / "z"
    )
