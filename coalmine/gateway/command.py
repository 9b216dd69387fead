"""`coalmine gateway --config FILE`: run the data plane."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["gateway_command"]


def gateway_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML configuration file"),
    port: int | None = typer.Option(None, help="override gateway.port (0 = any free port)"),
    processes: int | None = typer.Option(
        None, help="override gateway.processes (0 = one per CPU core)"
    ),
) -> None:
    """Run the gateway: canary split, shadow mirror and prediction log in front of models."""
    from coalmine.config import ConfigError, load_config
    from coalmine.gateway.server import run_gateway  # keep `coalmine --help` fast

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    overrides: dict[str, int] = {}
    if port is not None:
        overrides["port"] = port
    if processes is not None:
        overrides["processes"] = processes
    if overrides:
        gateway = loaded.gateway.model_copy(update=overrides)
        loaded = loaded.model_copy(update={"gateway": gateway})
    raise typer.Exit(run_gateway(loaded))
