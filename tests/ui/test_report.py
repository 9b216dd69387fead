import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from coalmine.store.engine import open_engine
from coalmine.ui.failure import parse_slice
from coalmine.ui.report import write_report
from coalmine.ui.story import load_story
from tests.ui.seed import T0, seed_rollout


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            value = a.get(key) or ""
            if re.match(r"^(https?:)?//", value):
                self.external.append(value)
        if tag in ("h2", "h3"):
            self._cell = []
        elif tag == "table":
            self._table = self._section
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3") and self._cell is not None:
            self._section = "".join(self._cell).strip()
            self._cell = None
        elif tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row and self._table is not None:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_report_cli_writes_a_self_contained_failure_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = open_engine(url)
    seeded = seed_rollout(engine)
    engine.dispose()
    out = tmp_path / "out" / "report.html"

    done = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "report", "digits", "-o", str(out), "--store", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    html = out.read_text()

    parser = _Tags()
    parser.feed(html)
    assert parser.external == []  # nothing fetched from the network
    assert len(html) > 3_000_000  # plotly.js itself is inlined
    assert "Plotly.newPlot" in html or "Plotly.react" in html
    assert "rolled_back" in html and "accuracy on region=north failed" in html

    canary = next(v for k, v in parser.rows.items() if k.startswith("Canary"))
    assert canary, "the candidate's wrong answers in the failing slice are listed"
    for _request_id, _ts, slices, candidate, label, inputs in canary:
        assert slices == "region=north"
        assert candidate != label  # wrong by its label
        assert inputs.startswith('{"instances"')  # as logged
    assert len(canary) == min(25, seeded.north_wrong_candidate)
    assert f"candidate wrong on {seeded.north_wrong_candidate} of" in html

    shadow = next(v for k, v in parser.rows.items() if k.startswith("Shadow"))
    assert len(shadow) == 25
    assert all(candidate != production for _r, _t, _s, candidate, production, *_ in shadow)
    # the failing slice first: the north region leads the list
    assert shadow[0][2] == "region=north"
    assert f"{seeded.shadow_disagreements} of " in html


def test_story_of_a_running_rollout_draws_every_chart(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    seeded = seed_rollout(engine, end_phase="canary")
    story = load_story(engine, seeded.rollout_id, now=T0 + 60)
    assert story.failure is None and not story.ended
    assert story.end == T0 + 60
    # 20% of the traffic after the shadow phase went to the candidate
    share = [y for x, y in zip(story.candidate_share.x, story.candidate_share.y, strict=True)
             if x >= T0 + 22 and y is not None]  # fmt: skip
    assert 0.1 < sum(share) / len(share) < 0.3
    assert set(story.totals) == {"production", "candidate", "shadow"}
    assert story.totals["shadow"]["error_rate"] > 0  # the seeded 5xx in shadow
    agree, paired = story.agreement_total
    assert 0.6 < agree / paired < 0.95

    from coalmine.ui.charts import figures

    figs = figures(story)
    assert set(figs) == {"traffic", "criteria", "latency", "shadow", "resources"}
    # the overall criteria, and the slice that failed along the way
    slices = {key.rsplit(":", 1)[1] for key in figs["criteria"]}
    assert {"None", "region=north"} <= slices or {"overall", "region=north"} <= slices
    assert all(parse_slice(s) in (None, {"region": "north"}) for s in slices)
    north = figs["criteria"]["criterion:accuracy:region=north"]["data"]
    estimate = next(t for t in north if t["name"] == "estimate")
    assert len(estimate["x"]) == 20  # one point per recorded snapshot
    assert set(figs["shadow"]) == {"agreement", "distribution"}

    out = write_report(engine, str(seeded.rollout_id), tmp_path / "r.html", now=T0 + 60)
    html = out.read_text()
    assert "Failure analysis" in html  # the section exists, hidden when empty
    assert "noise floor: a fresh baseline" in html  # the judgement's notes are shown
    engine.dispose()


def test_report_shows_cpu_and_memory_per_version_over_time(tmp_path: Path) -> None:
    """Issue 15: CPU per request and memory per version over time, a chart per version
    (production first, both on the same two ranges) and a table, from the windows every
    recorded judgement carries."""
    import json

    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    seeded = seed_rollout(engine)
    out = write_report(engine, str(seeded.rollout_id), tmp_path / "r.html", now=T0 + 60)
    engine.dispose()
    html = out.read_text()

    start = html.index('<script type="application/json" id="figures-data">')
    data = html[html.index(">", start) + 1 : html.index("</script>", start)]
    resources = json.loads(data.replace("<\\/", "</"))["resources"]
    assert list(resources) == ["resources:v1", "resources:v3"]
    v1, v3 = resources["resources:v1"], resources["resources:v3"]
    assert v1["layout"]["title"]["text"] == "v1 (production): CPU and memory"
    assert v3["layout"]["title"]["text"] == "v3 (candidate): CPU and memory"
    for fig in (v1, v3):
        cpu, memory = fig["data"]
        assert cpu["name"] == "CPU ms per request" and memory["yaxis"] == "y2"
        assert len(cpu["x"]) == 20  # a window per recorded judgement, none repeated
        assert fig["layout"]["yaxis2"]["side"] == "right"
    assert v1["layout"]["yaxis"]["range"] == v3["layout"]["yaxis"]["range"]
    assert v1["layout"]["yaxis2"]["range"] == v3["layout"]["yaxis2"]["range"]
    assert max(v3["data"][1]["y"]) == pytest.approx(96.0 + 0.6 * 40)

    parser = _Tags()
    parser.feed(html)
    rows = parser.rows["CPU and memory per version"]
    assert [r[0] for r in rows] == ["v1 (production)", "v3 (candidate)"]
    assert [r[1] for r in rows] == ["20", "20"]  # windows drawn
    assert float(rows[1][4]) == pytest.approx(120.0)  # v3's peak resident MB


def test_a_rollout_without_resource_readings_says_where_they_come_from(tmp_path: Path) -> None:
    from sqlalchemy import delete, update

    from coalmine.store.schema import judgement_snapshots, rollout_events

    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    seeded = seed_rollout(engine)
    with engine.begin() as conn:  # judgements of a store whose versions have no source
        conn.execute(delete(judgement_snapshots))
        conn.execute(update(rollout_events).values(judgement=None))
    story = load_story(engine, seeded.rollout_id, now=T0 + 60)
    engine.dispose()
    from coalmine.ui.charts import figures
    from coalmine.ui.render import render_sections

    assert story.resources == {} and figures(story)["resources"] == {}
    text = render_sections(story)["resources"]
    assert "No CPU or memory readings" in text and "metrics_url" in text


def test_logged_text_is_escaped_not_executed(tmp_path: Path) -> None:
    from sqlalchemy import update

    from coalmine.store.schema import predictions, rollouts
    from coalmine.ui.render import render_sections

    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    seeded = seed_rollout(engine)
    evil = '<img src=x onerror="alert(1)">'
    with engine.begin() as conn:
        conn.execute(update(rollouts).values(reason=evil))
        conn.execute(update(predictions).values(input='{"q": "</script><script>alert(2)"}'))
    story = load_story(engine, seeded.rollout_id)
    sections = render_sections(story)
    html = "".join(sections.values())
    assert evil not in html and "&lt;img src=x" in html
    assert "<script>" not in html and "&lt;/script&gt;&lt;script&gt;alert(2)" in html
    report = write_report(engine, str(seeded.rollout_id), tmp_path / "r.html").read_text()
    assert evil not in report and "</script><script>alert(2)" not in report
    engine.dispose()
