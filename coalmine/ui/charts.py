"""Plotly figures (plain dicts, drawn by plotly.js) of a rollout's story.

Pure: `figures(story)` only reshapes what `load_story` read. The dashboard and the report
draw the same figures, so they always tell the same story.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from coalmine.ui.failure import parse_slice
from coalmine.ui.series import Series
from coalmine.ui.story import Story, criteria_of

__all__ = ["COLORS", "GROUP_TITLES", "Figure", "figures", "iso"]

Figure = dict[str, Any]
COLORS = {
    "production": "#4c78a8",
    "candidate": "#e45756",
    "shadow": "#f58518",
    "baseline": "#72b7b2",
    "threshold": "#555555",
    "band": "rgba(228,87,86,0.18)",
}
GROUP_TITLES = {
    "traffic": "Traffic share",
    "criteria": "Criteria: estimate and confidence bounds against the threshold",
    "latency": "Latency and errors: candidate against production",
    "shadow": "Shadow agreement and drift",
    "resources": "CPU and memory per version",
}
MAX_CRITERION_FIGURES = 16


def iso(ts: float) -> str:
    """A UTC timestamp plotly reads as a date (no zone suffix: the axis says UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _layout(title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01},
        "height": 280,
        "margin": {"l": 56, "r": 16, "t": 40, "b": 40},
        "xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
        "yaxis": {"title": {"text": y_title}, "zeroline": False},
        "legend": {"orientation": "h", "y": -0.25},
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 11},
        "paper_bgcolor": "white",
        "plot_bgcolor": "#fafafa",
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def _line(
    series: Series, name: str, color: str, *, scale: float = 1.0, dash: str = "solid"
) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "lines+markers" if len(series.x) < 40 else "lines",
        "name": name,
        "x": [iso(x) for x in series.x],
        "y": [None if y is None else y * scale for y in series.y],
        "customdata": series.n,
        "hovertemplate": "%{y:.3g} (n=%{customdata})",
        "line": {"color": color, "dash": dash, "width": 2},
        "marker": {"size": 4},
    }


def _event_lines(story: Story) -> list[dict[str, Any]]:
    """Vertical marks at each phase change, so every chart lines up with the timeline."""
    shapes = []
    for event in story.events:
        if event["from_phase"] != event["to_phase"]:
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": iso(event["ts"]),
                    "x1": iso(event["ts"]),
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#bbbbbb", "width": 1, "dash": "dot"},
                }
            )
    return shapes


def _traffic(story: Story) -> Figure:
    r = story.rollout
    xs, canary, mirror = [iso(story.start)], [0.0], [0.0]
    for event in story.events:
        xs.append(iso(event["ts"]))
        canary.append(event["canary_weight_bp"] / 100)
        mirror.append(event["mirror_bp"] / 100)
    xs.append(iso(story.end))
    canary.append((r["canary_weight_bp"] or 0) / 100)
    mirror.append((r["mirror_bp"] or 0) / 100)
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "canary weight (set)",
            "x": xs,
            "y": canary,
            "line": {"shape": "hv", "color": COLORS["candidate"], "width": 2},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "mirror share (set)",
            "x": xs,
            "y": mirror,
            "line": {"shape": "hv", "color": COLORS["shadow"], "width": 2, "dash": "dash"},
        },
    ]
    if story.candidate_share and story.candidate_share.x:
        trace = _line(story.candidate_share, "candidate share (observed)", COLORS["candidate"],
                      scale=100, dash="dot")  # fmt: skip
        trace["mode"] = "markers"
        data.append(trace)
    if story.mirrored_share and story.mirrored_share.x:
        trace = _line(story.mirrored_share, "mirrored (observed)", COLORS["shadow"], scale=100)
        trace["mode"] = "markers"
        data.append(trace)
    layout = _layout("Traffic to the candidate over time", "% of requests",
                     shapes=_event_lines(story))  # fmt: skip
    layout["yaxis"]["range"] = [-2, 102]
    return {"data": data, "layout": layout}


def _criterion_key(result: dict[str, Any]) -> tuple[str, str]:
    return (
        str(result.get("name") or result.get("metric") or "?"),
        str(result.get("slice") or "overall"),
    )


def _criteria(story: Story) -> dict[str, Figure]:
    """One figure per criterion on the whole traffic, plus every slice that ever failed."""
    history: list[tuple[float, list[dict[str, Any]]]] = [
        (s.ts, criteria_of(s.judgement)) for s in story.snapshots
    ]
    if not history:  # no snapshots recorded: the transitions' judgements still tell a story
        history = [(e["ts"], criteria_of(e["judgement"])) for e in story.events if e["judgement"]]
        if story.judgement:
            history.append((story.rollout["updated_at"], criteria_of(story.judgement)))
    wanted: list[tuple[str, str]] = []
    for _ts, results in history:
        for result in results:
            key = _criterion_key(result)
            failed = str(result.get("verdict", "")).lower() == "fail"
            if key not in wanted and (parse_slice(key[1]) is None or failed):
                wanted.append(key)
    wanted.sort(key=lambda k: (parse_slice(k[1]) is not None, k))
    out: dict[str, Figure] = {}
    for key in wanted[:MAX_CRITERION_FIGURES]:
        xs: list[str] = []
        est: list[float | None] = []
        lo: list[float | None] = []
        hi: list[float | None] = []
        thr: list[float | None] = []
        verdicts: list[str] = []
        metric = ""
        scale = None
        for ts, results in history:
            for result in story.scaled(results):
                if _criterion_key(result) == key:
                    scale = story.scale(result)
                    xs.append(iso(ts))
                    est.append(result.get("estimate"))
                    lo.append(result.get("lower"))
                    hi.append(result.get("upper"))
                    thr.append(result.get("threshold"))
                    verdicts.append(str(result.get("verdict", "")))
                    metric = str(result.get("metric") or metric)
        data = [
            {"type": "scatter", "mode": "lines", "name": "upper bound", "x": xs, "y": hi,
             "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
            {"type": "scatter", "mode": "lines", "name": "confidence bounds", "x": xs, "y": lo,
             "fill": "tonexty", "fillcolor": COLORS["band"], "line": {"width": 0},
             "hoverinfo": "skip"},
            {"type": "scatter", "mode": "lines+markers", "name": "estimate", "x": xs, "y": est,
             "customdata": verdicts, "hovertemplate": "%{y:.4g} (%{customdata})",
             "line": {"color": COLORS["candidate"], "width": 2}, "marker": {"size": 4}},
            {"type": "scatter", "mode": "lines", "name": "threshold", "x": xs, "y": thr,
             "line": {"color": COLORS["threshold"], "dash": "dash", "width": 1.5}},
        ]  # fmt: skip
        name, slice_name = key
        title = f"{name}" + ("" if parse_slice(slice_name) is None else f" — slice {slice_name}")
        last = verdicts[-1] if verdicts else ""
        y_title = scale.axis if scale is not None else metric or "difference"
        layout = _layout(f"{title}  [{last}]", y_title, shapes=_event_lines(story))
        layout["yaxis"]["automargin"] = True
        out[f"criterion:{name}:{slice_name}"] = {"data": data, "layout": layout}
    return out


_GROUP_NAMES = {"production": "production", "candidate": "candidate (canary)",
                "shadow": "candidate (shadow)", "baseline": "baseline"}  # fmt: skip


def _latency(story: Story) -> dict[str, Figure]:
    lat: list[dict[str, Any]] = []
    err: list[dict[str, Any]] = []
    for group, series in story.latency.items():
        color = COLORS.get(group, "#888888")
        label = _GROUP_NAMES.get(group, group)
        lat.append(_line(series["p50"], f"{label} p50", color))
        lat.append(_line(series["p95"], f"{label} p95", color, dash="dash"))
        err.append(_line(series["error_rate"], label, color, scale=100))
    shapes = _event_lines(story)
    return {
        "latency": {"data": lat, "layout": _layout("Latency", "ms", shapes=shapes)},
        "errors": {"data": err, "layout": _layout("Error rate", "% of calls", shapes=shapes)},
    }


def _shadow(story: Story) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    if story.agreement and story.agreement.x:
        layout = _layout("Shadow agreement with production", "% of mirrored requests",
                         shapes=_event_lines(story))  # fmt: skip
        out["agreement"] = {
            "data": [_line(story.agreement, "agreement", COLORS["shadow"], scale=100)],
            "layout": layout,
        }
    if story.distributions:
        data = []
        for group, dist in story.distributions.items():
            data.append(
                {
                    "type": "bar",
                    "name": _GROUP_NAMES.get(group, group),
                    "x": list(dist),
                    "y": [v * 100 for v in dist.values()],
                    "marker": {"color": COLORS.get(group, "#888888")},
                }
            )
        layout = _layout("Prediction distribution (drift)", "% of predictions", barmode="group")
        layout["xaxis"] = {"type": "category", "title": {"text": "predicted value"}}
        layout["hovermode"] = "closest"
        out["distribution"] = {"data": data, "layout": layout}
    return out


def _round_up(value: float) -> float:
    """The next 1, 2, 2.5 or 5 × 10^k at or above `value` (1 for nothing): a shared axis
    range whose ticks read as round numbers on both of a chart's axes."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def _resources(story: Story) -> dict[str, Figure]:
    """A small chart per version: CPU ms per request (left axis) and the window's peak
    resident MB (right axis). Every version's chart has the same two ranges, so they
    compare at a glance, as the `cpu` and `memory` criteria compare them."""

    def top(name: str) -> float:
        values = [y for s in story.resources.values() for y in s[name].y if y is not None]
        return _round_up(max(values, default=0.0) * 1.1)

    cpu_top, memory_top = top("cpu"), top("memory")
    shapes = _event_lines(story)
    out: dict[str, Figure] = {}

    def order(version: str) -> tuple[bool, str]:
        return story.role_of(version) != "production", version

    for version in sorted(story.resources, key=order):
        series = story.resources[version]
        role = story.role_of(version)
        color = COLORS[role]
        cpu = _line(series["cpu"], "CPU ms per request", color)
        cpu["hovertemplate"] = "%{y:.3g} ms/request (window %{customdata})"
        memory = _line(series["memory"], "peak resident MB", color, dash="dash")
        memory["yaxis"] = "y2"
        memory["hovertemplate"] = "%{y:.4g} MB (window %{customdata})"
        layout = _layout(f"{version} ({role}): CPU and memory", "CPU ms per request",
                         shapes=shapes, margin={"l": 56, "r": 56, "t": 40, "b": 40})  # fmt: skip
        layout["yaxis"].update(range=[0, cpu_top], rangemode="tozero")
        layout["yaxis2"] = {"title": {"text": "resident MB"}, "overlaying": "y",
                            "side": "right", "range": [0, memory_top], "showgrid": False,
                            "zeroline": False}  # fmt: skip
        out[f"resources:{version}"] = {"data": [cpu, memory], "layout": layout}
    return out


def figures(story: Story) -> dict[str, dict[str, Figure]]:
    """Figures by group (`GROUP_TITLES`), each a {figure id: plotly figure} in order."""
    return {
        "traffic": {"traffic": _traffic(story)},
        "criteria": _criteria(story),
        "latency": _latency(story),
        "shadow": _shadow(story),
        "resources": _resources(story),
    }
