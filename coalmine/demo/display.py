"""The live terminal view of a demo rollout, built from what the control API reports.

Pure: `render(view)` turns a `View` (the rollout's status, its latest judgement and events,
the traffic counters) into Rich renderables; the run loop refreshes it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["View", "fmt_value", "render"]

_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
_PHASE_STYLE = {
    "shadow": "cyan",
    "canary": "magenta",
    "promoting": "green",
    "promoted": "bold green",
    "rolling_back": "red",
    "rolled_back": "bold red",
}


@dataclass
class View:
    title: str
    started: float = field(default_factory=time.monotonic)
    status: dict[str, Any] = field(default_factory=dict)
    judgement: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, Any] = field(default_factory=dict)
    served_share: dict[str, float] = field(default_factory=dict)
    note: str = ""


def fmt_value(metric: str, value: float | None, *, signed: bool = False) -> str:
    """Points for proportions, × for ratios (latency, resources), plain otherwise."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if metric.startswith(("latency", "cpu", "memory")):
        return f"{value:.2f}×"
    if metric in ("accuracy", "error_rate", "agreement"):
        return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _phase_line(view: View) -> Text:
    s = view.status
    phase = str(s.get("phase", "starting"))
    text = Text("Phase ")
    text.append(phase.upper(), style=_PHASE_STYLE.get(phase, "bold"))
    steps = s.get("steps") or []
    if phase == "canary" and steps:
        index = int(s.get("step_index") or 0)
        text.append(f"   step {index + 1}/{len(steps)} ({steps[min(index, len(steps) - 1)]:g}%)")
    text.append(f"   canary weight {float(s.get('canary_weight') or 0):g}%")
    text.append(f"   mirror {float(s.get('mirror_share') or 0):g}%")
    text.append(f"   elapsed {time.monotonic() - view.started:.0f}s", style="dim")
    return text


def _traffic_line(view: View) -> Text:
    t = view.traffic
    text = Text("Traffic ")
    text.append(
        f"{t.get('rate', 0):.0f} req/s · sent {t.get('sent', 0)} · errors "
        f"{t.get('failed', 0) + t.get('transport_errors', 0)} · labels {t.get('labels', 0)} "
        f"({t.get('label_share', 0) * 100:.0f}% of answers, {t.get('label_delay_s', 0):.1f}s late)"
    )
    if view.served_share:
        split = "  ".join(f"{v} {p * 100:.0f}%" for v, p in sorted(view.served_share.items()))
        text.append(f"   served: {split}", style="bold")
    return text


def _results_table(judgement: dict[str, Any]) -> Table:
    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for column, justify in (
        ("criterion", "left"),
        ("slice", "left"),
        ("n cand / prod", "right"),
        ("estimate", "right"),
        ("bounds", "right"),
        ("threshold", "right"),
        ("verdict", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    results = judgement.get("results") or []
    # Every overall result; per-slice rows for quality metrics and for anything failing.
    shown = [
        r
        for r in results
        if r.get("slice") is None or r.get("metric") == "accuracy" or r.get("verdict") == "fail"
    ]
    for r in shown:
        metric = str(r.get("metric", ""))
        verdict = str(r.get("verdict", ""))
        table.add_row(
            str(r.get("name", metric)),
            str(r.get("slice") or "all traffic"),
            f"{r.get('n_candidate', 0)} / {r.get('n_baseline', 0)}",
            fmt_value(metric, r.get("estimate"), signed=True),
            f"[{fmt_value(metric, r.get('lower'), signed=True)}, "
            f"{fmt_value(metric, r.get('upper'), signed=True)}]",
            fmt_value(metric, r.get("threshold"), signed=True),
            Text(verdict.upper(), style=_VERDICT_STYLE.get(verdict, "")),
        )
    return table


def _judgement_words(judgement: dict[str, Any] | None, status: dict[str, Any]) -> Text:
    if status.get("reason") and status.get("phase") in ("promoted", "rolled_back", "aborted"):
        return Text(f"Decision: {status['reason']}", style="bold")
    if not judgement:
        return Text("Judgement: waiting for the first evaluation…", style="dim")
    verdict = str(judgement.get("verdict", ""))
    failing = [r for r in judgement.get("results") or [] if r.get("verdict") == "fail"]
    if failing:
        words = "; ".join(str(r.get("sentence")) for r in failing[:2])
    else:
        overall = [r for r in judgement.get("results") or [] if r.get("slice") is None]
        words = "; ".join(str(r.get("sentence")) for r in overall[:2]) or "no results yet"
    text = Text("Judgement ")
    text.append(verdict.upper(), style=_VERDICT_STYLE.get(verdict, "bold"))
    text.append(f": {words}")
    return text


def _events(view: View) -> Text:
    text = Text()
    for e in view.events[-4:]:
        kind = str(e.get("kind") or e.get("type") or "event")
        text.append(f"  {kind:<10} ", style="bold")
        text.append(f"{str(e.get('reason') or '')[:160]}\n")
    return text


def render(view: View) -> RenderableType:
    parts: list[RenderableType] = [_phase_line(view), _traffic_line(view), Text()]
    judgement = (view.judgement or {}).get("judgement") if view.judgement else None
    if judgement:
        parts.append(_results_table(judgement))
    parts.append(_judgement_words(judgement, view.status))
    if view.events:
        parts += [Text("Events", style="bold"), _events(view)]
    if view.note:
        parts.append(Text(view.note, style="dim"))
    return Panel(Group(*parts), title=view.title, title_align="left")
