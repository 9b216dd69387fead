"""`coalmine demo`: thin; scikit-learn and the rest load only when the demo runs."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["demo_command"]


def demo_command(
    speed: float = typer.Option(
        1.0, min=0.1, help="divides step durations and label delay (2 = twice as fast)"
    ),
    rate: float | None = typer.Option(None, min=1.0, help="requests per second (default 150)"),
    workdir: Path | None = typer.Option(None, help="where models, SQLite and logs go"),
    keep_serving: bool = typer.Option(
        False, "--keep-serving", help="keep gateway, API and dashboard up after the demo"
    ),
) -> None:
    """Shadow, ramp and promote a better model, then catch and roll back a worse one."""
    import uvloop

    from coalmine.demo.run import run_demo

    outcome = uvloop.run(run_demo(speed=speed, rate=rate, work=workdir, keep_serving=keep_serving))
    raise typer.Exit(0 if outcome.ok else 1)
