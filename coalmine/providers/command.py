"""`coalmine nginx-snippet --config FILE MODEL`: what an nginx server block needs once.

Coalmine writes the model's http-level file (upstreams, split_clients); the locations that
use it live in the operator's server block, which Coalmine never edits.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["nginx_snippet_command"]


def nginx_snippet_command(
    model: str = typer.Argument(..., help="a model whose traffic.provider is nginx"),
    config: Path = typer.Option(..., "--config", "-c", help="YAML configuration file"),
) -> None:
    """Print the include line and the locations to paste into the nginx server block."""
    from coalmine.config import ConfigError, NginxTraffic, load_config
    from coalmine.providers.nginx import NginxProvider

    try:
        loaded = load_config(config)
        entry = loaded.model(model)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyError:
        typer.echo(f"model {model!r} is not in {config}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(entry.traffic, NginxTraffic):
        typer.echo(
            f"models[{model}].traffic.provider is {entry.traffic.provider!r}, not nginx", err=True
        )
        raise typer.Exit(2)
    provider = NginxProvider(model, entry.routing.sticky, entry.traffic)
    typer.echo(f"# in the http block of {entry.traffic.main_config}:")
    typer.echo(f"include {entry.traffic.config_path};")
    typer.echo("# in the server block that serves the model:")
    typer.echo(provider.location_snippet(), nl=False)
