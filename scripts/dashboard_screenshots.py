"""Screenshots of the dashboard and the report at 1400 px, for review and for the README.

    python scripts/dashboard_screenshots.py [OUTDIR]      (default: ./screenshots)

Starts a real control API (`coalmine serve --no-gateway --no-controller`) over a store seeded
with three rollouts (tests/ui/seed.py: rolled back on a slice, a canary waiting for approval,
promoted) and drives Debian's Chromium with Playwright. Writes index.png,
canary-waiting-for-approval.png, rolled-back.png, promoted.png and report.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the seeded stack lives beside the tests that use it

from coalmine.store.engine import open_engine  # noqa: E402
from coalmine.ui.report import write_report  # noqa: E402
from tests.ui.seeded_api import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    SeededApi,
    open_page,
    start_seeded_api,
)

WIDTH = 1400


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="coalmine-shots-") as tmp:
        api = start_seeded_api(Path(tmp))
        try:
            return _shoot(api, out, Path(tmp))
        finally:
            api.stop()


def _settle(page: Any, ready: str, charts: bool) -> None:
    page.wait_for_selector(ready)
    if charts:
        page.wait_for_selector("#fig-latency .js-plotly-plot .main-svg")
    page.wait_for_timeout(300)  # a resize observer's redraw, if one was due


def _shoot(api: SeededApi, out: Path, tmp: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    pages = {
        "index": ("/ui/", "[data-testid=rollouts-table]"),
        "canary-waiting-for-approval": (
            f"/ui/rollouts/{api.waiting}",
            "[data-testid=approval-banner]",
        ),
        "rolled-back": (f"/ui/rollouts/{api.rolled_back}", "[data-testid=failure]"),
        "promoted": (f"/ui/rollouts/{api.promoted}", "[data-testid=weight]"),
    }
    written: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, (path, ready) in pages.items():
            page = open_page(browser, api.url + path, WIDTH)
            _settle(page, ready, charts=path != "/ui/")
            written.append(out / f"{name}.png")
            page.screenshot(path=str(written[-1]), full_page=True)
            page.close()
        engine = open_engine(api.store_url)
        report = write_report(engine, str(api.rolled_back), tmp / "report.html")
        engine.dispose()
        page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
        page.goto(report.as_uri())
        _settle(page, "[data-testid=failure]", charts=True)
        written.append(out / "report.png")
        page.screenshot(path=str(written[-1]), full_page=True)
        browser.close()
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots")):
        print(path)
