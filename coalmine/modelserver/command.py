"""`coalmine serve-model`: a scikit-learn model over KServe V1, Open Inference V2 and plain JSON."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["serve_model_command"]


def serve_model_command(
    model: Path = typer.Argument(..., exists=True, dir_okay=False, help="joblib file"),
    port: int = typer.Option(8000, min=0, max=65535, help="0 picks a free port"),
    host: str = typer.Option("127.0.0.1"),
    name: str | None = typer.Option(None, help="model name in URLs; default the file's stem"),
    version: str = typer.Option("1", help="reported as model_version"),
    delay_ms: float = typer.Option(0.0, min=0.0, help="injected latency per inference call"),
    error_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="share of inference calls answered with a 500"
    ),
    seed: int | None = typer.Option(None, help="seed for --error-rate / --flip-rate draws"),
    flip_rate: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="share of answers replaced by another class at random (a nondeterministic classifier)",
    ),
    burn_cpu_ms: float = typer.Option(
        0.0, min=0.0, help="CPU time spent in every inference call (a costlier version)"
    ),
    leak_kb: float = typer.Option(
        0.0, min=0.0, help="memory kept forever by every inference call (a leaking version)"
    ),
) -> None:
    """Serve a scikit-learn estimator or Pipeline saved with joblib (trusted files only)."""
    from coalmine.modelserver.app import Faults  # aiohttp, numpy: only when serving
    from coalmine.modelserver.server import run_model_server

    run_model_server(
        model,
        host=host,
        port=port,
        name=name,
        version=version,
        faults=Faults(
            delay_ms=delay_ms,
            error_rate=error_rate,
            seed=seed,
            flip_rate=flip_rate,
            burn_cpu_ms=burn_cpu_ms,
            leak_kb=leak_kb,
        ),
    )
