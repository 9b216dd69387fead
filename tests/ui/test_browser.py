"""The dashboard and the report in a real browser (Debian's Chromium, driven by Playwright).

A real stack on loopback: two `coalmine serve-model` processes (iris v1 and v2), one
`coalmine serve` process (gateway + control API + controller), a rollout of v2 started over
the API and held in its shadow phase, real traffic with slice headers and late labels.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from coalmine.modelserver import ModelServerHandle, start_model_server
from coalmine.store.engine import open_engine
from coalmine.ui.report import write_report
from tests.ui.seed import seed_rollout

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOKEN = "browser-test-token"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


@dataclass
class Stack:
    api: str
    gateway: str
    rollout_id: int
    store_url: str

    def get(self, path: str) -> Any:
        r = httpx.get(self.api + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        r.raise_for_status()
        return r.json()


def _read_urls(proc: subprocess.Popen[str], want: set[str], timeout: float) -> dict[str, str]:
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while want - set(urls) and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            match = re.match(r"coalmine serve: (\w+) (http://\S+)", line)
            if match:
                urls[match.group(1)] = match.group(2)
        if proc.poll() is not None:
            break
    if want - set(urls):
        raise RuntimeError(f"coalmine serve did not announce {want - set(urls)}")
    return urls


def _traffic(stack_gateway: str, n: int) -> list[tuple[str, int]]:
    iris = load_iris()
    sent = []
    with httpx.Client(base_url=stack_gateway, timeout=30) as http:
        for i in range(n):
            row = iris.data[i % 150].tolist()
            r = http.post(
                "/v1/models/iris:predict",
                json={"instances": [row]},
                headers={"X-User-Id": f"u{i}", "X-Region": "north" if i % 2 else "south"},
            )
            assert r.status_code == 200, r.text
            sent.append((r.headers["X-Request-ID"], int(iris.target[i % 150])))
    return sent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("browser")
    iris = load_iris()
    models = {
        "v1": LogisticRegression(max_iter=500).fit(iris.data, iris.target),
        "v2": DecisionTreeClassifier(max_depth=2, random_state=0).fit(iris.data, iris.target),
    }
    servers: list[ModelServerHandle] = []
    proc: subprocess.Popen[str] | None = None
    serve_log = (tmp / "serve.log").open("w")  # read it when the stack does not come up
    try:
        for version, estimator in models.items():
            path = tmp / f"{version}.joblib"
            joblib.dump(estimator, path)
            servers.append(start_model_server(path, name="iris", version=version))
        store_url = f"sqlite:///{tmp / 'coalmine.db'}"
        config = {
            "store": {"url": store_url},
            "gateway": {"port": 0},
            "api": {"port": 0, "token": TOKEN},
            "logging": {"flush_interval_s": 0.05},
            "models": [
                {
                    "name": "iris",
                    "versions": [{"name": "v1", "url": servers[0].url}],
                    "routing": {"stable": "v1"},
                    "slices": [{"name": "region", "header": "X-Region"}],
                }
            ],
        }
        (tmp / "coalmine.yaml").write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(tmp / "coalmine.yaml")],
            stdout=subprocess.PIPE, stderr=serve_log, text=True,
        )  # fmt: skip
        urls = _read_urls(proc, {"gateway", "api"}, timeout=60)
        # keep draining its stdout so a chatty server can never block on a full pipe
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        spec = {
            # held in shadow for the whole test: long minimum duration, frequent evaluations
            "shadow": {"mirror_share": 100, "min_duration": 3600, "max_duration": 7200},
            "interval": 0.5,
        }
        started = httpx.post(
            urls["api"] + "/api/v1/rollouts",
            json={"model": "iris", "candidate": "v2", "url": servers[1].url, "spec": spec},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        stack = Stack(urls["api"], urls["gateway"], started.json()["id"], store_url)
        deadline = time.monotonic() + 30
        while stack.get(f"/api/v1/rollouts/{stack.rollout_id}")["phase"] != "shadow":
            assert time.monotonic() < deadline, "the controller never started the shadow"
            time.sleep(0.2)

        sent = _traffic(stack.gateway, 240)
        time.sleep(0.5)  # the gateway's log flush, before labels can refer to the requests
        labels = [{"request_id": rid, "label": label} for rid, label in sent[::3]]
        r = httpx.post(stack.gateway + "/v1/feedback", json={"items": labels}, timeout=30)
        assert r.status_code < 300, r.text
        deadline = time.monotonic() + 60
        while True:  # wait for a few evaluations: the criteria charts need points
            data = stack.get(f"/api/v1/ui/rollouts/{stack.rollout_id}")
            # and for a judgement that has read the shadow's rows (they are logged after
            # production's, by the mirror): its per-slice results are what the page shows
            latest = stack.get(f"/api/v1/rollouts/{stack.rollout_id}/judgement")["judgement"]
            sliced = any(r.get("slice") for r in (latest or {}).get("results", []))
            if len(data["figures"]["criteria"]) >= 2 and data["figures"]["shadow"] and sliced:
                break
            assert time.monotonic() < deadline, "no judgements recorded"
            time.sleep(0.5)
        yield stack
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in servers:
            server.stop()
        serve_log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


def _enter_token(page: Any, token: str) -> None:
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-save").click()


def test_dashboard_shows_the_running_rollout_and_its_charts(stack: Stack, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    console = Console(page)
    page.goto(stack.api + "/ui/")
    page.locator("#banner").get_by_text("Enter the API token").wait_for()
    _enter_token(page, TOKEN)

    models = page.get_by_test_id("models-table")
    models.wait_for()
    assert "iris" in models.inner_text() and "v1" in models.inner_text()
    rollouts = page.get_by_test_id("rollouts-table")
    assert "shadow" in rollouts.inner_text() and "v2" in rollouts.inner_text()

    page.get_by_test_id("rollout-link").first.click()
    page.wait_for_url(f"**/ui/rollouts/{stack.rollout_id}")
    page.get_by_test_id("phase").wait_for()  # the token came along in sessionStorage
    assert page.get_by_test_id("phase").inner_text() == "shadow"
    for group in ("traffic", "criteria", "latency", "shadow"):
        page.wait_for_selector(f"#fig-{group} .js-plotly-plot .main-svg")
    assert page.locator("#fig-criteria .js-plotly-plot").count() >= 2
    # drawn, not just created: the traffic chart has its lines, the criteria their bands
    assert page.locator("#fig-traffic .scatterlayer .trace").count() >= 2
    assert page.get_by_test_id("criteria-table").locator("tbody tr").count() >= 2
    assert "region=" in page.get_by_test_id("criteria-table").inner_text()
    assert "agreed with production" in page.locator("#sec-performance").inner_text()
    page.screenshot(path=str(Path(os.environ.get("COALMINE_SHOTS", "/tmp")) / "dashboard.png"),
                    full_page=True)  # fmt: skip
    assert console.errors == []
    page.close()


def test_pause_needs_the_token_and_the_ui_shows_a_refusal(stack: Stack, browser: Any) -> None:
    context = browser.new_context()  # a fresh sessionStorage: no token
    page = context.new_page()
    page.goto(f"{stack.api}/ui/rollouts/{stack.rollout_id}")
    result = page.get_by_test_id("action-result")

    page.get_by_test_id("btn-pause").click()
    page.wait_for_function(
        "document.getElementById('action-result').textContent.includes('Refused')"
    )
    assert "Refused (401)" in result.inner_text() and "missing bearer token" in result.inner_text()
    assert stack.get(f"/api/v1/rollouts/{stack.rollout_id}")["phase"] == "shadow"

    _enter_token(page, "not-the-token")
    page.get_by_text("Refused (403)").first.wait_for()  # reading is refused too
    page.get_by_test_id("btn-pause").click()
    page.wait_for_function("document.getElementById('action-result').textContent.includes('403')")
    assert stack.get(f"/api/v1/rollouts/{stack.rollout_id}")["phase"] == "shadow"

    _enter_token(page, TOKEN)
    page.get_by_test_id("phase").wait_for()
    page.get_by_test_id("btn-pause").click()
    page.wait_for_function("document.getElementById('action-result').textContent.includes('done')")
    assert stack.get(f"/api/v1/rollouts/{stack.rollout_id}")["phase"] == "paused"
    page.wait_for_function("document.querySelector('[data-testid=phase]').textContent === 'paused'")
    assert page.get_by_test_id("btn-pause").is_disabled()

    page.get_by_test_id("btn-resume").click()  # leave it running for the other tests
    page.wait_for_function("document.querySelector('[data-testid=phase]').textContent === 'shadow'")
    assert stack.get(f"/api/v1/rollouts/{stack.rollout_id}")["phase"] == "shadow"
    context.close()


@pytest.mark.parametrize("which", ["rolled_back_seed", "live"])
def test_report_opens_offline(which: str, stack: Stack, browser: Any, tmp_path: Path) -> None:
    if which == "live":
        engine = open_engine(stack.store_url)
        rollout = str(stack.rollout_id)
    else:
        engine = open_engine(f"sqlite:///{tmp_path / 'seed.db'}")
        rollout = str(seed_rollout(engine).rollout_id)
    report = write_report(engine, rollout, tmp_path / "report.html")
    engine.dispose()

    context = browser.new_context(offline=True)
    attempted: list[str] = []

    def refuse_network(route: Any) -> None:
        attempted.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!file:).*"), refuse_network)
    page = context.new_page()
    console = Console(page)
    page.goto(report.as_uri())
    page.wait_for_selector("#fig-traffic .js-plotly-plot .main-svg")
    assert page.locator(".js-plotly-plot").count() >= 5
    assert page.locator("#fig-criteria .js-plotly-plot").count() >= 2
    if which == "rolled_back_seed":
        failure = page.get_by_test_id("failure")
        assert failure.is_visible() and "region=north" in failure.inner_text()
    assert attempted == [] and console.errors == []
    context.close()
