"""Store commands: `coalmine routes diff|apply` and `coalmine export`.

`coalmine routes diff|apply --config FILE`: the config file's routing against the store's;
with `--traffic`, also each model's traffic layer (nginx, Kubernetes) against the store's.

The file's `routing:` only seeds a model the store has never seen; after that the live split
is the store's (the controller and the API change it). These commands show where the two
differ and, for a model with no active rollout, make the file's routing the live one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["export_command", "routes_app"]

routes_app = typer.Typer(
    help="Compare or apply the config file's routing to the store's live routes.",
    no_args_is_help=True,
)
ConfigFile = typer.Option(..., "--config", "-c", help="YAML configuration file")
TrafficFlag = typer.Option(
    False, "--traffic", help="also each model's traffic layer (nginx, Kubernetes) vs the store"
)


def _load(config: Path) -> Any:
    from coalmine.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@routes_app.command("diff")
def diff(config: Path = ConfigFile, traffic: bool = TrafficFlag) -> None:
    """Print where the store's live routing differs from the file; exit 1 if it does."""
    from coalmine.store.engine import open_engine
    from coalmine.store.routes import RouteRepository, describe_drift, route_drift

    loaded = _load(config)
    engine = open_engine(loaded.store.url)
    try:
        drift = route_drift(loaded, RouteRepository(engine).load_all())
        for model, changed in drift.items():
            typer.echo(describe_drift(model, changed))
        if not drift:
            typer.echo("the store's live routing matches the config file")
        layers = _layers(loaded, engine, None, apply=False) if traffic else False
    finally:
        engine.dispose()
    raise typer.Exit(1 if drift or layers else 0)


def _layers(loaded: Any, engine: Any, models: list[str] | None, *, apply: bool) -> bool:
    """Print each traffic layer's differences (or the changes applied); True if any."""
    from coalmine.providers.layers import layer_drift, sync_layers

    report = (sync_layers if apply else layer_drift)(loaded, engine, models)
    for model, (provider, lines, error) in report.items():
        if error is not None:
            typer.echo(f"{model}: traffic layer {provider}: error: {error}")
        elif not lines:
            typer.echo(f"{model}: traffic layer {provider} holds the stored route")
        else:
            verb = "took" if apply else "differs from the stored route"
            typer.echo(f"{model}: traffic layer {provider} {verb}:")
            for line in lines:
                typer.echo(f"  {line}")
    return any(error is not None or (lines and not apply) for _, lines, error in report.values())


@routes_app.command("apply")
def apply(
    models: list[str] = typer.Argument(..., help="models whose file routing becomes live"),
    config: Path = ConfigFile,
    traffic: bool = typer.Option(
        False, "--traffic", help="then bring their traffic layers to it now"
    ),
) -> None:
    """Make the file's routing of MODELS the live one (refused during a rollout)."""
    from coalmine.store.engine import open_engine
    from coalmine.store.routes import RouteError, RouteRepository

    loaded = _load(config)
    engine = open_engine(loaded.store.url)
    try:
        applied = RouteRepository(engine).apply_config(loaded, models)
        for state in applied:
            typer.echo(
                f"{state.model}: stable {state.stable}, canary {state.canary or '-'} "
                f"{state.canary_weight_bp / 100:g}%, shadow {state.shadow or '-'} "
                f"{state.mirror_bp / 100:g}%, salt {state.salt!r} (revision {state.revision})"
            )
        failed = _layers(loaded, engine, models, apply=True) if traffic else False
    except RouteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    if failed:
        raise typer.Exit(1)


def _since(value: str | None) -> float | None:
    """Epoch seconds, an ISO 8601 time, or an age such as 90s, 30m, 2h, 7d."""
    if value is None:
        return None
    import re
    import time
    from datetime import UTC, datetime

    if m := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip()):
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - seconds
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give epoch seconds, an ISO time or an age like 30m, 2h, 7d",
            param_hint="--since",
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def export_command(
    model: str = typer.Argument(..., help="model name"),
    output: Path = typer.Option(..., "--output", "-o", help="FILE.csv or FILE.parquet"),
    config: Path = ConfigFile,
    since: str | None = typer.Option(
        None, "--since", help="only calls since: epoch seconds, ISO time, or an age (30m, 2h, 7d)"
    ),
    rollout: int | None = typer.Option(None, "--rollout", help="only calls during rollout ID"),
) -> None:
    """Export MODEL's prediction log with its labels and outcomes (for `coalmine analyze`)."""
    from coalmine.store.engine import open_engine
    from coalmine.store.export import ExportFormatError, iter_export, write_export

    loaded = _load(config)
    engine = open_engine(loaded.store.url)
    try:
        pages = iter_export(engine, model, since=_since(since), rollout_id=rollout)
        count = write_export(pages, output)
    except ExportFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(f"wrote {count} call(s) of {model} to {output}")
