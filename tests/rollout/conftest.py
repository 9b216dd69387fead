"""End-to-end harness for rollouts: real model-server processes, a real `coalmine serve`
(gateway + control API + controller, or split in two processes), real traffic with late
labels, and a webhook receiver. Everything on loopback, ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import joblib
import pytest
import yaml
from aiohttp import web
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from coalmine.modelserver import ModelServerHandle, start_model_server

TOKEN = "e2e-token"
IRIS_X, IRIS_Y = load_iris(return_X_y=True)


@pytest.fixture(scope="session")
def model_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """v1 and v2: good classifiers (97%); bad: sepal features only (82%, −15 pts);
    flaky: v2's model answering 500 on 20% of requests. One process each, for the session."""
    out = tmp_path_factory.mktemp("rollout-models")
    good = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)
    good2 = LogisticRegression(C=0.5, max_iter=500).fit(IRIS_X, IRIS_Y)
    bad = make_pipeline(
        ColumnTransformer([("sepal", "passthrough", [0, 1])]), LogisticRegression(max_iter=500)
    ).fit(IRIS_X, IRIS_Y)
    paths = {}
    for name, est in (("good", good), ("good2", good2), ("bad", bad)):
        paths[name] = out / f"{name}.joblib"
        joblib.dump(est, paths[name])
    handles: dict[str, ModelServerHandle] = {}
    try:
        handles["v1"] = start_model_server(paths["good"], name="iris", version="v1", log_dir=out)
        handles["v2"] = start_model_server(paths["good2"], name="iris", version="v2", log_dir=out)
        handles["bad"] = start_model_server(paths["bad"], name="iris", version="bad", log_dir=out)
        handles["flaky"] = start_model_server(
            paths["good2"], name="iris", version="flaky", error_rate=0.2, seed=1, log_dir=out
        )
        yield {k: h.url for k, h in handles.items()}
    finally:
        for h in handles.values():
            h.stop()


class Coalmine:
    """`coalmine serve` processes on one store: by default one process for everything;
    `split=True` runs the gateway alone and the API + controller in a second process that
    tests may SIGKILL and restart."""

    def __init__(self, tmp: Path, stable_url: str, split: bool = False) -> None:
        self.tmp = tmp
        self.db = tmp / "coalmine.db"
        self.config = tmp / "coalmine.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "gateway": {"port": 0, "fast_guard_failures": 0},
                    "api": {"port": 0, "token": TOKEN},
                    "store": {"url": f"sqlite:///{self.db}"},
                    "logging": {"flush_interval_s": 0.1, "batch_size": 100},
                    "models": [
                        {
                            "name": "iris",
                            "versions": [{"name": "v1", "url": stable_url}],
                            "routing": {"stable": "v1", "sticky": {"header": "X-User-Id"}},
                        }
                    ],
                }
            )
        )
        self.split = split
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway_url = ""
        self.api_url = ""
        if split:
            self._start("gateway", "--no-api", "--no-controller")
            self._start("control", "--no-gateway")
        else:
            self._start("all")

    def _start(self, name: str, *flags: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(self.config), *flags],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        want = {"gateway"} if "--no-api" in flags else {"api"}
        if not flags:
            want = {"gateway", "api"}
        if "--no-controller" not in flags:
            want.add("controller")
        while want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"coalmine serve ({name}) did not start")
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(
                    f"coalmine serve ({name}) died: "
                    f"{(self.tmp / f'{name}.log').read_text()[-3000:]}"
                )
            if m := re.match(r"coalmine serve: (gateway|api) (http://\S+)", line):
                want.discard(m.group(1))
                setattr(self, f"{m.group(1)}_url", m.group(2))
            elif "controller running" in line:
                want.discard("controller")

    def kill_control(self) -> None:
        """SIGKILL the API + controller process (split mode): no cleanup at all."""
        proc = self.procs.pop("control")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart_control(self) -> None:
        self._start("control", "--no-gateway")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()


@pytest.fixture
def coalmine_factory(tmp_path: Path, model_servers: dict[str, str]) -> Iterator[Any]:
    started: list[Coalmine] = []

    def make(split: bool = False) -> Coalmine:
        c = Coalmine(tmp_path, model_servers["v1"], split=split)
        started.append(c)
        return c

    yield make
    for c in started:
        c.stop()


class Traffic:
    """Iris requests through the gateway at `rate`/s with sticky user ids, and their true
    labels POSTed to /v1/feedback ~0.5 s later (unknown ids retried: the log is batched).
    Also a webhook receiver on the same loop, collecting (headers, body) pairs."""

    def __init__(self, gateway_url: str, rate: float = 120.0) -> None:
        self.gateway_url = gateway_url
        self.rate = rate
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.versions: dict[str, int] = {}
        self.webhooks: list[tuple[dict[str, str], bytes]] = []
        self.webhook_url = ""
        self._labels: list[tuple[float, str, int, int]] = []
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("traffic loop did not start")

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.webhook_url = f"http://127.0.0.1:{port}/hook"
        self._ready.set()
        rng = random.Random(7)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            labeller = asyncio.create_task(self._label_loop(session))
            pending: set[asyncio.Task[None]] = set()
            while not self._stop.is_set():
                if len(pending) < 32:
                    i = rng.randrange(len(IRIS_Y))
                    task = asyncio.create_task(self._one(session, i, rng.randrange(10_000)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(1 / self.rate)
            if pending:
                await asyncio.wait(pending)
            labeller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await labeller
        await runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        self.webhooks.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def _one(self, session: aiohttp.ClientSession, i: int, user: int) -> None:
        rid = uuid.uuid4().hex
        headers = {"X-Request-ID": rid, "X-User-Id": f"u{user}"}
        body = {"instances": [list(IRIS_X[i])]}
        self.sent += 1
        try:
            async with session.post(
                f"{self.gateway_url}/v1/models/iris:predict", json=body, headers=headers
            ) as resp:
                await resp.read()
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                version = resp.headers.get("X-Model-Version", "?")
                self.versions[version] = self.versions.get(version, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            self.statuses[0] = self.statuses.get(0, 0) + 1
            return
        self._labels.append((time.monotonic() + 0.5, rid, int(IRIS_Y[i]), 0))

    async def _label_loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(0.3)
            now = time.monotonic()
            due = [x for x in self._labels if x[0] <= now]
            self._labels = [x for x in self._labels if x[0] > now]
            if not due:
                continue
            items = [{"request_id": rid, "label": label} for _, rid, label, _ in due]
            try:
                async with session.post(
                    f"{self.gateway_url}/v1/feedback", json={"items": items}
                ) as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            for error in (body or {}).get("errors") or []:
                index = error.get("index") if isinstance(error, dict) else None
                if isinstance(index, int) and 0 <= index < len(due) and due[index][3] < 3:
                    _, rid, label, tries = due[index]
                    self._labels.append((now + 0.5, rid, label, tries + 1))

    def stop(self) -> None:
        if self._stop is not None:
            loop_stop = self._stop
            # the event belongs to the traffic thread's loop; setting it from here is a
            # plain flag write, and the loop polls it at every request
            loop_stop.set()
        self._thread.join(15)


@pytest.fixture
def traffic_factory() -> Iterator[Any]:
    started: list[Traffic] = []

    def make(gateway_url: str, rate: float = 120.0) -> Traffic:
        t = Traffic(gateway_url, rate)
        started.append(t)
        return t

    yield make
    for t in started:
        t.stop()
