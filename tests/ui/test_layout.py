"""What the dashboard and the report show, checked in a real Chromium at 1400 and 1920 px:
the points a new user found misleading (each failed before its fix).

- the first chart of a two-column grid was drawn ~1,200 px wide in a ~600 px cell (clipped);
- nothing said a step was waiting for approval;
- a promoted rollout said "candidate serves 0%";
- "PASS" where nothing had passed and nothing had failed;
- bounds outside the metric's range, and an accuracy chart whose axis said "accuracy" while
  it plotted a difference;
- start-up warnings as one long paragraph in the timeline;
- a logo glyph that the font may lack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coalmine.store.engine import open_engine
from coalmine.ui.report import write_report
from tests.ui.seeded_api import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SeededApi,
    chart_overflows,
    open_page,
    start_seeded_api,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]
WIDTHS = [1400, 1920]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededApi]:
    seeded = start_seeded_api(tmp_path_factory.mktemp("layout"))
    yield seeded
    seeded.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _rollout_page(browser: Any, api: SeededApi, rollout_id: int, width: int) -> Any:
    page = open_page(browser, f"{api.url}/ui/rollouts/{rollout_id}", width)
    page.wait_for_selector("#fig-criteria .js-plotly-plot .main-svg")
    page.wait_for_selector("#fig-latency .js-plotly-plot .main-svg")
    page.wait_for_timeout(300)  # a resize observer's redraw, if one was due
    return page


@pytest.mark.parametrize("width", WIDTHS)
def test_charts_fit_their_cells(api: SeededApi, browser: Any, width: int) -> None:
    page = _rollout_page(browser, api, api.rolled_back, width)
    assert page.locator("#fig-criteria .fig").count() >= 2  # a real two-column grid
    assert chart_overflows(page) == []
    page.close()


def test_report_charts_fit_their_cells(api: SeededApi, browser: Any, tmp_path: Path) -> None:
    engine = open_engine(api.store_url)
    report = write_report(engine, str(api.rolled_back), tmp_path / "report.html")
    engine.dispose()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(report.as_uri())
    page.wait_for_selector("#fig-latency .js-plotly-plot .main-svg")
    page.wait_for_selector("#fig-resources .js-plotly-plot .main-svg")
    page.wait_for_timeout(300)
    assert chart_overflows(page) == []
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_cpu_and_memory_per_version_are_drawn_whole(
    api: SeededApi, browser: Any, width: int
) -> None:
    """Issue 15: a chart per version of its CPU per request and memory over time, production
    first; both axis titles and every trace drawn inside the chart's cell."""
    page = _rollout_page(browser, api, api.rolled_back, width)
    page.wait_for_selector("#fig-resources .js-plotly-plot .main-svg")
    drawn = page.evaluate(
        """() => Array.from(document.querySelectorAll('#fig-resources .fig')).map(fig => {
             const cell = fig.getBoundingClientRect();
             const inside = el => { const r = el.getBoundingClientRect();
               return r.width > 0 && r.left >= cell.left - 1 && r.right <= cell.right + 1
                 && r.top >= cell.top - 1 && r.bottom <= cell.bottom + 1; };
             const texts = sel => Array.from(fig.querySelectorAll(sel));
             return {
               title: fig.querySelector('.gtitle').textContent,
               axes: texts('.g-ytitle, .g-y2title').map(t => [t.textContent, inside(t)]),
               traces: fig.querySelectorAll('.scatterlayer .trace').length,
             };
           })"""
    )
    assert [d["title"] for d in drawn] == ["v1 (production): CPU and memory",
                                           "v3 (candidate): CPU and memory"]  # fmt: skip
    for d in drawn:
        assert d["axes"] == [["CPU ms per request", True], ["resident MB", True]], d
        assert d["traces"] == 2
    assert chart_overflows(page) == []
    rows = page.get_by_test_id("resources-table").locator("tbody tr")
    assert rows.count() == 2 and rows.nth(1).inner_text().startswith("v3 (candidate)")
    page.close()


def test_a_step_waiting_for_approval_says_so(api: SeededApi, browser: Any) -> None:
    page = open_page(browser, f"{api.url}/ui/rollouts/{api.waiting}", 1400)
    banner = page.get_by_test_id("approval-banner")
    banner.wait_for()
    assert "Waiting for approval" in banner.inner_text() and "50% step" in banner.inner_text()
    assert f"coalmine rollout approve {api.waiting}" in banner.inner_text()
    page.wait_for_function("!document.querySelector('[data-testid=btn-approve]').disabled")
    page.close()


def test_a_promoted_rollout_says_the_candidate_serves_everything(
    api: SeededApi, browser: Any
) -> None:
    page = open_page(browser, f"{api.url}/ui/rollouts/{api.promoted}", 1400)
    weight = page.get_by_test_id("weight")
    weight.wait_for()
    assert (
        weight.inner_text().startswith("100%") and "now the stable version" in weight.inner_text()
    )
    index = open_page(browser, f"{api.url}/ui/", 1400)
    index.get_by_test_id("rollouts-table").wait_for()
    row = index.get_by_test_id("rollouts-table").locator("tr", has_text="churn")
    assert "100%" in row.inner_text()
    page.close()
    index.close()


def test_bounds_stay_in_range_and_say_their_scale(api: SeededApi, browser: Any) -> None:
    page = _rollout_page(browser, api, api.rolled_back, 1400)
    table = page.get_by_test_id("criteria-table")
    rows = table.locator("tbody tr", has_text="accuracy")
    assert rows.count() >= 2
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        lower, upper = (float(cells.nth(k).inner_text().replace("−", "-")) for k in (5, 6))
        assert -1.0 <= lower <= upper <= 1.0
        assert "accuracy: candidate − production" in cells.nth(8).inner_text()
    titles = page.evaluate(
        "() => Array.from(document.querySelectorAll('#fig-criteria .fig')).map("
        "f => f.layout && f.layout.yaxis.title.text)"
    )
    accuracy_axes = [t for t in titles if t and "accuracy" in t]
    assert accuracy_axes and all(t == "Δ accuracy (cand − prod)" for t in accuracy_axes), titles
    page.close()


def test_startup_warnings_are_a_collapsed_list_grouped_by_criterion(
    api: SeededApi, browser: Any
) -> None:
    page = open_page(browser, f"{api.url}/ui/rollouts/{api.waiting}", 1400)
    details = page.get_by_test_id("startup-warnings")
    details.wait_for()
    assert details.evaluate("d => d.open") is False
    assert "3 start-up warnings" in details.locator("summary").inner_text()
    groups = details.locator(".warning-group strong").all_text_contents()
    assert groups == ["accuracy", "p95_latency"]
    details.locator("summary").click()
    assert details.locator("li").count() == 3
    page.close()


def test_the_logo_is_drawn_not_a_font_glyph(api: SeededApi, browser: Any) -> None:
    page = open_page(browser, f"{api.url}/ui/", 1400)
    brand = page.get_by_test_id("brand")
    brand.wait_for()
    assert brand.inner_text().strip() == "Coalmine"
    box = brand.locator("svg").bounding_box()
    assert box is not None and box["width"] > 10
    page.close()


def test_the_screenshot_script_writes_every_page(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "dashboard_screenshots.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["canary-waiting-for-approval.png", "index.png", "promoted.png",
                     "report.png", "rolled-back.png"]  # fmt: skip
    assert all(p.stat().st_size > 20_000 for p in tmp_path.glob("*.png"))
