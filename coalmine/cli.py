"""The `coalmine` command: thin; it parses, calls the library or the API, and prints."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

# Every command module keeps its heavy imports (numpy/scipy, SQLAlchemy, aiohttp, FastAPI,
# scikit-learn, httpx) inside its functions: pipelines call `coalmine rollout status` often.
# tests/test_cli_imports.py keeps it so.
from coalmine.analysis.cli import analyze_command, plan_command
from coalmine.demo.command import demo_command
from coalmine.gateway.command import gateway_command
from coalmine.modelserver.command import serve_model_command
from coalmine.providers.command import nginx_snippet_command
from coalmine.rollout.commands import rollback_command, rollout_app
from coalmine.serve import serve_command
from coalmine.store.command import export_command, routes_app
from coalmine.ui.report import report_command

app = typer.Typer(
    help="Coalmine: shadow tests, canary releases and automatic promotion or rollback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Coalmine: shadow tests, canary releases and automatic promotion or rollback."""


@app.command()
def validate(config: Path = typer.Argument(..., help="YAML configuration file")) -> None:
    """Check a configuration file; print every error with its field path and reason."""
    from coalmine.config import ConfigError, load_config

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        err_console.print(f"[red]invalid[/red] {exc.source}: {len(exc.errors)} error(s)")
        for path, reason in exc.errors:
            err_console.print(f"  [bold]{path}[/bold]: {reason}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]valid[/green] {config}: {loaded.summary()}", highlight=False)


app.command("serve-model")(serve_model_command)
app.command("analyze")(analyze_command)
app.command("plan")(plan_command)
app.command("demo")(demo_command)
app.command("gateway")(gateway_command)
app.add_typer(rollout_app, name="rollout")
app.command("rollback")(rollback_command)
app.add_typer(routes_app, name="routes")
app.command("export")(export_command)
app.command("serve")(serve_command)
app.command("report")(report_command)
app.command("nginx-snippet")(nginx_snippet_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
