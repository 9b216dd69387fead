"""`coalmine report ROLLOUT -o report.html`: one self-contained HTML file per rollout.

Everything is inlined (plotly.js from the installed `plotly` package, the stylesheet, the
data), so the file opens offline, in a CI artifact viewer or attached to a review.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # SQLAlchemy, jinja2 and plotly load when a report is written
    from sqlalchemy import Engine

    from coalmine.ui.story import Story

__all__ = ["render_report", "report_command", "write_report"]


def render_report(story: Story) -> str:
    from coalmine.ui.charts import figures
    from coalmine.ui.render import environment, plotly_js, static_text
    from coalmine.ui.snapshots import to_json

    # "</" inside inlined JSON would end the <script> element early
    figures_json = to_json(figures(story)).replace("</", "<\\/")
    return (
        environment()
        .get_template("rollout.html")
        .render(
            story=story,
            rollout_id=story.rollout["id"],
            inline=True,
            base="",
            css=static_text("style.css"),
            plotly_js=plotly_js(),
            render_js=static_text("render.js"),
            figures_json=figures_json,
        )
    )


def write_report(engine: Engine, rollout: str, output: Path, *, now: float | None = None) -> Path:
    """Write the report of `rollout` (an id, or a model name = its newest rollout)."""
    from coalmine.ui.story import find_rollout_id, load_story

    story = load_story(engine, find_rollout_id(engine, rollout), now=now)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(render_report(story), encoding="utf-8")
    tmp.replace(output)  # never leave a half-written report behind
    return output


def _store_url(config: Path | None, store: str | None) -> str:
    from coalmine.config import load_config

    if store:
        return store
    if config:
        return load_config(config).store.url
    return "sqlite:///coalmine.db"


def report_command(
    rollout: str = typer.Argument(..., help="rollout id, or a model name for its newest rollout"),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write"),
    config: Path | None = typer.Option(None, "--config", "-c", help="configuration file"),
    store: str | None = typer.Option(None, "--store", help="store URL (overrides --config)"),
) -> None:
    """Write a self-contained HTML report of a rollout (opens offline)."""
    from rich.console import Console

    from coalmine.config import ConfigError
    from coalmine.store.engine import open_engine
    from coalmine.ui.story import RolloutNotFound

    err = Console(stderr=True)
    try:
        url = _store_url(config, store)
    except ConfigError as exc:
        err.print(f"[red]invalid config[/red]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        # opening would create (and migrate) an empty store: say what is missing instead
        err.print(f"[red]error[/red]: no store at {url} (give --store URL or --config FILE)")
        raise typer.Exit(1)
    engine = open_engine(url)
    started = time.monotonic()
    try:
        path = write_report(engine, rollout, output)
    except RolloutNotFound as exc:
        err.print(f"[red]error[/red]: {exc}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    size = path.stat().st_size / 1e6
    typer.echo(f"wrote {path} ({size:.1f} MB, {time.monotonic() - started:.1f}s)")
