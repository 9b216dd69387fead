"""Jinja2 rendering shared by the dashboard and the report: one set of section macros.

The dashboard's JSON carries the same section HTML the report embeds, so a table is
written once (in `templates/_sections.html`), escaped by Jinja's autoescape.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from coalmine.ui.charts import GROUP_TITLES, figures
from coalmine.ui.scales import judgement_word
from coalmine.ui.series import resource_totals
from coalmine.ui.snapshots import to_json
from coalmine.ui.story import Story, criteria_of

__all__ = ["SECTIONS", "environment", "plotly_js", "render_sections", "static_text", "story_json"]

SECTIONS = ("status", "timeline", "criteria", "performance", "resources", "failure", "spec")


def _ts(value: float | None) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(value: float | None) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _bp(value: int | None) -> str:
    return "—" if value is None else f"{value / 100:g}%"


def _compact(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _verdict_class(value: Any) -> str:
    text = str(value or "").lower()
    if text in ("pass", "passed", "promoted", "promoting"):
        return "good"
    if text in ("fail", "failed", "rolled_back", "rolling_back", "aborted"):
        return "bad"
    if text in ("paused", "hold"):
        return "warn"
    return "neutral"


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("coalmine.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ts=_ts, clock=_clock, duration=_duration, num=_num, pct=_pct, bp=_bp,
        compact=_compact, verdict_class=_verdict_class,
    )  # fmt: skip
    env.globals.update(
        criteria_of=criteria_of,
        resource_totals=resource_totals,
        group_titles=GROUP_TITLES,
        sorted_criteria=_sorted_criteria,
        headline_criteria=_headline_criteria,
        judgement_word=lambda story: judgement_word(story.judgement, criteria_of(story.judgement)),
        warning_groups=_warning_groups,
    )
    return env


def _sorted_criteria(story: Story) -> list[dict[str, Any]]:
    def key(c: dict[str, Any]) -> tuple[int, int, str, str]:
        verdict = str(c.get("verdict", "")).lower()
        overall = str(c.get("slice") or "overall").lower() in ("overall", "all", "")
        return (0 if overall else 1, 0 if verdict == "fail" else 1, str(c.get("name")),
                str(c.get("slice")))  # fmt: skip

    return sorted(story.scaled(criteria_of(story.judgement)), key=key)


def _headline_criteria(story: Story, limit: int = 12) -> list[dict[str, Any]]:
    """The sentences worth reading first: every failing result, then the overall ones."""
    rows = [c for c in _sorted_criteria(story) if c.get("sentence")]
    failing = [c for c in rows if str(c.get("verdict")).lower() == "fail"]
    overall = [c for c in rows if c not in failing and c.get("slice") in (None, "", "overall")]
    return (failing + overall)[:limit]


def _warning_groups(warnings: list[str]) -> list[tuple[str, list[str]]]:
    """Start-up warnings grouped by the criterion they name ("name: …" or "step N%: name …"),
    in first-seen order; a warning naming none is grouped under "rollout"."""
    groups: dict[str, list[str]] = {}
    for text in warnings:
        head, _, rest = text.partition(": ")
        if head.startswith("step ") and rest:
            key = rest.split(" ", 1)[0]
        elif rest and " " not in head:
            key = head
        else:
            key = "rollout"
        groups.setdefault(key, []).append(text)
    return list(groups.items())


def render_sections(story: Story) -> dict[str, str]:
    """Each section of a rollout page as HTML, by name (see SECTIONS)."""
    module = (
        environment()
        .get_template("_sections.html")
        .make_module(
            {"story": story, "criteria": _sorted_criteria(story), "now": story.generated_at}
        )
    )
    return {name: str(getattr(module, name)(story)) for name in SECTIONS}


def story_json(
    story: Story, *, awaiting_approval: float | None = None, compute_s: float = 0.0
) -> str:
    """The page's data: section HTML, figures, and the few fields the buttons need."""
    r = story.rollout
    return to_json(
        {
            "rollout": {
                "id": r["id"],
                "model": r["model"],
                "candidate": r["candidate"],
                "phase": r["phase"],
                "step_index": r["step_index"],
                "canary_weight_bp": r["canary_weight_bp"],
                "mirror_bp": r["mirror_bp"],
                "outcome": r["outcome"],
                "ended": story.ended,
                "awaiting_approval": awaiting_approval,  # the gated step's weight, in %
            },
            "sections": render_sections(story),
            "figures": figures(story),
            "generated_at": story.generated_at,
            # the page polls less often when a big log makes each answer expensive
            "compute_s": compute_s,
        }
    )


@cache
def plotly_js() -> str:
    """plotly.js as shipped inside the installed `plotly` package: no CDN, works offline."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


@cache
def static_text(name: str) -> str:
    return resources.files("coalmine.ui").joinpath("static", name).read_text(encoding="utf-8")
