"""A control API (with the dashboard) over a store seeded with three finished or waiting
rollouts, and the browser pages of each: shared by the layout tests and by
`scripts/dashboard_screenshots.py`.

The API is a real `coalmine serve --no-gateway --no-controller` process on loopback (no
controller: the seeded rollouts stay exactly as written).
"""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coalmine.store.engine import open_engine
from tests.ui.seed import SPEC, seed_rollout

TOKEN = "layout-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
GATED_SPEC = {**SPEC, "canary": {**SPEC["canary"], "approval_before": [50]}}  # type: ignore[dict-item]


@dataclass
class SeededApi:
    url: str
    store_url: str
    rolled_back: int
    waiting: int
    promoted: int
    process: subprocess.Popen[str]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_seeded_api(workdir: Path) -> SeededApi:
    store_url = f"sqlite:///{workdir / 'seeded.db'}"
    engine = open_engine(store_url)
    try:
        rolled_back = seed_rollout(engine, model="digits").rollout_id
        waiting = seed_rollout(engine, model="fraud", end_phase="canary", spec=GATED_SPEC)
        promoted = seed_rollout(engine, model="churn", end_phase="promoted").rollout_id
    finally:
        engine.dispose()
    models = [
        {"name": m, "versions": [{"name": "v1", "url": "http://127.0.0.1:9"},
                                 {"name": "v3", "url": "http://127.0.0.1:9"}],
         "routing": {"stable": "v1"}}
        for m in ("digits", "fraud", "churn")
    ]  # fmt: skip
    config = {"store": {"url": store_url}, "api": {"port": 0, "token": TOKEN}, "models": models}
    path = workdir / "seeded.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "seeded-api.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(path), "--no-gateway",
         "--no-controller"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    url = _announced_api(process, timeout=60)
    return SeededApi(url, store_url, rolled_back, waiting.rollout_id, promoted, process)


def _announced_api(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready and (
            m := re.match(r"coalmine serve: api (http://\S+)", process.stdout.readline())
        ):
            return m.group(1)
    process.kill()
    raise RuntimeError("the seeded API did not start")


def open_page(browser: Any, url: str, width: int, *, token: str | None = TOKEN) -> Any:
    """A page at `url` with the token entered (sessionStorage), the live data drawn."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    if token:
        page.add_init_script(f"sessionStorage.setItem('coalmine.token', {token!r})")
    page.goto(url)
    return page


def chart_overflows(page: Any) -> list[str]:
    """Charts drawn wider than their grid cell (the cell clips them): one line each."""
    return list(
        page.evaluate(
            """() => Array.from(document.querySelectorAll('.figs.grid .fig')).flatMap(fig => {
                 const svg = fig.querySelector('.main-svg');
                 if (!svg) return [];
                 const cell = fig.getBoundingClientRect(), drawn = svg.getBoundingClientRect();
                 const grid = fig.parentElement.getBoundingClientRect();
                 return drawn.width > cell.width + 1 || cell.right > grid.right + 1
                   ? [`${fig.dataset.fig}: chart ${drawn.width}px in a ${cell.width}px cell`]
                   : [];
               })"""
        )
    )
