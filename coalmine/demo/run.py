"""`coalmine demo`: roll out a good and a bad model on real traffic, end to end, locally.

It trains three versions (train.py), serves each from its own `serve-model` process, runs
`coalmine serve` (gateway + control API + controller) on an SQLite file in a work
directory, and sends traffic with late, partial labels (traffic.py). Then, through the
Python SDK, it rolls out v2 and, once v2 is production, v3, then v4: v2's model served
with a memory leak (`serve-model --leak-kb`). Every decision is the controller's, from the
analysis of the logged traffic and the versions' processes (CPU, memory); this module
only starts things, watches and checks the outcomes: exit 0 only when v2 was promoted, v3
rolled back with a reason naming the region it regressed in, and v4 rolled back naming
`memory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from coalmine.demo.data import REGIONS, load_demo_data
from coalmine.demo.display import View, render
from coalmine.demo.spec import LEAK_KB, DemoSettings, demo_settings
from coalmine.demo.stack import MODEL, ServeProcess, start_model_servers, start_serve
from coalmine.demo.traffic import TrafficConfig, TrafficGenerator
from coalmine.demo.train import BAD_REGION, DemoModels, train_demo_models
from coalmine.modelserver import ModelServerHandle

__all__ = ["DemoOutcome", "RolloutResult", "run_demo"]

TERMINAL = frozenset({"promoted", "rolled_back", "aborted", "completed"})
POLL_S = 0.5
# (candidate, expected outcome, what a rollback's reason must name), in order
PLAN = (
    ("v2", "promoted", ""),
    ("v3", "rolled_back", f"region={BAD_REGION}"),
    ("v4", "rolled_back", "memory"),
)
LEAKY = "v4"  # v2's model, served with a leak


@dataclass
class RolloutResult:
    candidate: str
    expected: str
    names: str = ""  # what a rollback's reason must name (the slice, the criterion)
    rollout_id: int | None = None
    phase: str = "not started"
    reason: str = ""
    seconds: float = 0.0
    report: Path | None = None

    @property
    def as_expected(self) -> bool:
        if self.phase != self.expected:
            return False
        # A rollback must name what went wrong (the slice, not just "accuracy"), found
        # failing: one at a step's deadline ("still inconclusive") is not the story told.
        return self.expected != "rolled_back" or (
            self.names in self.reason and "inconclusive" not in self.reason
        )


@dataclass
class DemoOutcome:
    work: Path
    results: list[RolloutResult] = field(default_factory=list)
    dashboard_url: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and len(self.results) == len(PLAN)
            and all(r.as_expected for r in self.results)
        )


class _Split:
    """Which version answered the users recently, from the X-Model-Version they saw."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self.history: deque[tuple[float, Counter[str]]] = deque()

    def update(self, counts: Counter[str]) -> dict[str, float]:
        now = time.monotonic()
        self.history.append((now, Counter(counts)))
        while len(self.history) > 2 and self.history[1][0] < now - self.window_s:
            self.history.popleft()
        recent = Counter(counts)
        recent.subtract(self.history[0][1])
        total = sum(v for v in recent.values() if v > 0)
        return {k: v / total for k, v in recent.items() if v > 0} if total else {}


def _offline_table(models: DemoModels) -> Table:
    table = Table(
        title="Offline accuracy on held-out digits (for reference; decisions "
        "come from live traffic)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("version")
    table.add_column("overall", justify="right")
    for region in REGIONS:
        table.add_column(region, justify="right")
    for version, ev in models.offline.items():
        cells = [f"{ev.regions[r] * 100:.1f}" for r in REGIONS]
        table.add_row(version, f"{ev.overall * 100:.1f}", *cells)
    return table


def _traffic_numbers(traffic: TrafficGenerator, settings: DemoSettings) -> dict[str, Any]:
    s = traffic.stats
    return {
        "rate": traffic.rate,
        "sent": s.sent,
        "failed": s.failed,
        "transport_errors": s.transport_errors,
        "labels": s.labels_accepted,
        "label_share": settings.label_share,
        "label_delay_s": settings.label_delay_s,
    }


async def _follow(
    client: Any,
    result: RolloutResult,
    traffic: TrafficGenerator,
    settings: DemoSettings,
    console: Console,
    dashboard_url: str,
) -> None:
    assert result.rollout_id is not None
    rid = result.rollout_id
    view = View(
        title=f"rollout #{rid}: {MODEL} {result.candidate}  ·  dashboard {dashboard_url}"
        f"/rollouts/{rid}"
    )
    split = _Split()
    deadline = time.monotonic() + settings.rollout_timeout_s
    seen_event = 0
    with Live(render(view), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            status, judgement, events = await asyncio.gather(
                asyncio.to_thread(client.status, rid),
                asyncio.to_thread(client.judgement, rid),
                asyncio.to_thread(client.events, rid, seen_event),
            )
            view.status, view.judgement = status, judgement
            for event in events:
                seen_event = max(seen_event, int(event.get("id", 0)))
                view.events.append(event)
                if not console.is_terminal:  # a log, not a screen: one line per event
                    reason = str(event.get("reason") or "")
                    if len(reason) > 300:
                        reason = reason[:300] + "…"
                    console.print(f"  #{rid} {event.get('kind')}: {reason}")
            view.traffic = _traffic_numbers(traffic, settings)
            view.served_share = split.update(traffic.stats.by_version)
            live.update(render(view))
            result.phase = str(status.get("phase"))
            if result.phase in TERMINAL:
                result.reason = str(status.get("reason") or "")
                break
            if time.monotonic() > deadline:
                await asyncio.to_thread(client.abort, rid, "demo time limit reached")
                result.phase = "aborted"
                result.reason = f"no decision within {settings.rollout_timeout_s:.0f}s"
                break
            await asyncio.sleep(POLL_S)


def _write_reports(outcome: DemoOutcome, store_url: str) -> None:
    try:
        from coalmine.ui.report import write_report
    except ImportError:
        outcome.problems.append("coalmine.ui.report is not available: no HTML report written")
        return
    from coalmine.store.engine import open_engine

    engine = open_engine(store_url)
    try:
        for r in outcome.results:
            if r.rollout_id is not None:
                r.report = write_report(
                    engine, str(r.rollout_id), outcome.work / f"report-{r.rollout_id}.html"
                )
    finally:
        engine.dispose()


async def run_demo(
    *,
    speed: float = 1.0,
    rate: float | None = None,
    work: Path | None = None,
    console: Console | None = None,
    keep_serving: bool = False,
) -> DemoOutcome:
    from coalmine.client import Client

    console = console or Console()
    settings = demo_settings(speed, rate)
    work = work or Path(tempfile.mkdtemp(prefix="coalmine-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    outcome = DemoOutcome(work)
    started = time.monotonic()
    console.print(f"[bold]Coalmine demo[/bold] (speed {speed:g}) — work directory {work}")

    data = load_demo_data()
    models = await asyncio.to_thread(train_demo_models, work / "models", data)
    console.print(_offline_table(models))
    for problem in models.problems():
        console.print(f"[yellow]warning:[/yellow] {problem}")

    servers: dict[str, ModelServerHandle] = {}
    serve: ServeProcess | None = None
    stop = asyncio.Event()
    traffic_task: asyncio.Task[None] | None = None
    client: Any = None
    try:
        paths = {**models.paths, LEAKY: models.paths["v2"]}
        servers = await start_model_servers(paths, work, {LEAKY: {"leak_kb": LEAK_KB}})
        serve = await asyncio.to_thread(start_serve, work, servers)
        outcome.dashboard_url = serve.dashboard_url
        console.print(
            f"model servers: {', '.join(f'{v} {h.url}' for v, h in servers.items())}\n"
            f"gateway {serve.gateway_url} · control API {serve.api_url} · "
            f"dashboard {serve.dashboard_url} (token in {work / 'coalmine.yaml'})"
        )
        traffic = TrafficGenerator(
            TrafficConfig(
                gateway_url=serve.gateway_url,
                model=MODEL,
                rate=settings.rate,
                label_share=settings.label_share,
                label_delay_s=settings.label_delay_s,
                users=settings.users,
            ),
            data,
        )
        traffic_task = asyncio.create_task(traffic.run(stop))
        await asyncio.sleep(1.0)  # production traffic first, so the shadow has a peer
        client = Client(serve.api_url, serve.token)
        for candidate, expected, names in PLAN:
            result = RolloutResult(candidate, expected, names)
            outcome.results.append(result)
            t0 = time.monotonic()
            console.rule(f"Rolling out {result.candidate} (expected: {result.expected})")
            record = await asyncio.to_thread(
                client.start_rollout, MODEL, result.candidate, servers[result.candidate].url,
                settings.spec,
            )  # fmt: skip
            result.rollout_id = int(record.id)
            await _follow(client, result, traffic, settings, console, serve.dashboard_url)
            result.seconds = time.monotonic() - t0
            style = "green" if result.as_expected else "red"
            console.print(
                f"[{style}]{result.candidate}: {result.phase}[/{style}] after "
                f"{result.seconds:.0f}s — {result.reason}"
            )
            if result.phase != result.expected:
                break
        stop.set()
        await traffic_task
        if traffic.stats.transport_errors or traffic.stats.failed:
            console.print(
                f"note: {traffic.stats.failed} non-2xx answers and "
                f"{traffic.stats.transport_errors} transport errors out of {traffic.stats.sent}"
            )
        _write_reports(outcome, f"sqlite:///{work / 'coalmine.db'}")
        _summary(outcome, console, time.monotonic() - started, traffic)
        if keep_serving:
            console.print(f"Still serving: dashboard {serve.dashboard_url} — press Ctrl-C to stop.")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    finally:
        stop.set()
        if traffic_task is not None and not traffic_task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(traffic_task, 15)
        if client is not None:
            client.close()
        if serve is not None:
            code = await asyncio.to_thread(serve.stop)
            if code not in (0, -15):
                outcome.problems.append(f"coalmine serve exited with code {code}")
        for handle in servers.values():
            await asyncio.to_thread(handle.stop)
    return outcome


def _summary(outcome: DemoOutcome, console: Console, seconds: float, traffic: Any) -> None:
    console.rule("Summary")
    for r in outcome.results:
        mark = "[green]✔[/green]" if r.as_expected else "[red]✘[/red]"
        console.print(
            f"{mark} rollout #{r.rollout_id} {r.candidate}: {r.phase} (expected "
            f"{r.expected}) in {r.seconds:.0f}s\n    {r.reason}"
        )
        if r.report is not None:
            console.print(f"    report: {r.report}")
    s = traffic.stats
    console.print(
        f"{s.sent} requests from {traffic.config.users} users, {s.labels_accepted} late labels; "
        f"{seconds:.0f}s in all."
    )
    console.print(
        f"Dashboard (while `coalmine serve` runs): {outcome.dashboard_url} — reopen with "
        f"`coalmine serve --config {outcome.work / 'coalmine.yaml'}`"
    )
    for p in outcome.problems:
        console.print(f"[yellow]problem:[/yellow] {p}")
    verdict = (
        "[bold green]demo OK[/bold green]" if outcome.ok else "[bold red]demo FAILED[/bold red]"
    )
    console.print(verdict)
