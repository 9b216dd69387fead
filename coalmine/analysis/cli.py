"""`coalmine analyze` and `coalmine plan`: thin; they parse, call the library and print."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

# The analysis modules (numpy, scipy: ~1 s) are imported inside the commands, so that
# `coalmine --help` and the rollout commands do not pay for them.

console = Console()
err_console = Console(stderr=True)

_COLOUR = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "yellow"}


def analyze_command(
    export: Path = typer.Argument(..., help="exported log: .csv or .parquet (predictions + label)"),
    model: str = typer.Option(..., "--model", help="model name"),
    candidate: str = typer.Option(..., "--candidate", help="candidate version"),
    baseline: str = typer.Option(..., "--baseline", help="production version"),
    criteria: Path | None = typer.Option(None, "--criteria", help="criteria YAML file"),
    mode: str = typer.Option("auto", "--mode", help="canary, shadow, or auto (from roles)"),
    task: str = typer.Option("classification", "--task", help="classification or regression"),
    alpha: float | None = typer.Option(None, "--alpha", help="family-wise error (default 0.05)"),
    max_slices: int = typer.Option(20, "--max-slices", help="slice values judged (0 = none)"),
    latency_unit: str = typer.Option("ms", "--latency-unit", help="unit of latency_ms: ms, s, us"),
    as_json: bool = typer.Option(False, "--json", help="print the judgement as JSON"),
    user_metric: list[str] = typer.Option(
        [], "--user-metric", help="NAME=module.path:function: criteria may name user:NAME"
    ),
) -> None:
    """Judge a candidate against production over an exported prediction log.

    Exit status: 0 PASS or INCONCLUSIVE, 1 FAIL, 2 bad input.
    """
    from coalmine.analysis.criteria import load_criteria
    from coalmine.analysis.sequential import Verdict
    from coalmine.analysis.sources.export import ExportError, analyze_export
    from coalmine.config import ConfigError

    try:
        _allow_user_metrics(user_metric)  # before the criteria that name them are read
        loaded = load_criteria(criteria) if criteria else None
        a = analyze_export(
            export, model=model, candidate=candidate, baseline=baseline,
            criteria=loaded.criteria if loaded else None, mode=mode, task=task,
            alpha=alpha or (loaded.alpha if loaded else 0.05), max_slices=max_slices,
            latency_unit=latency_unit,
        )  # fmt: skip
    except ConfigError as exc:
        err_console.print(f"[red]invalid[/red] {exc.source}: {len(exc.errors)} error(s)")
        for path, reason in exc.errors:
            err_console.print(f"  [bold]{path}[/bold]: {reason}", highlight=False)
        raise typer.Exit(2) from None
    except (ExportError, ValueError, OSError) as exc:
        err_console.print(f"[red]error[/red]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    judgement = a.judge()
    if as_json:
        typer.echo(json.dumps(judgement.to_dict(), indent=2, ensure_ascii=False))
    else:
        colour = _COLOUR[judgement.verdict.value]
        head, *rest = judgement.summary().splitlines()
        console.print(f"[bold {colour}]{head}[/]", highlight=False)
        for line in rest:
            console.print(line, highlight=False, soft_wrap=True)
    if judgement.verdict is Verdict.FAIL:
        raise typer.Exit(1)


def _allow_user_metrics(declared: list[str]) -> None:
    """`--user-metric NAME=module:function`: the allow-list of this run (your own process,
    as the server's comes from its config file)."""
    from coalmine.analysis.user_metrics import install_user_metrics

    targets = {}
    for item in declared:
        name, sep, target = item.partition("=")
        if not sep:
            raise ValueError(f"--user-metric {item!r}: expected NAME=module.path:function")
        targets[name.strip()] = target.strip()
    if targets:
        install_user_metrics(targets)


def plan_command(
    rps: float = typer.Option(..., "--rps", help="requests per second to the model"),
    label_rate: float = typer.Option(1.0, "--label-rate", help="share of requests labelled"),
    steps: str = typer.Option("1,5,25,50,100", "--steps", help="canary shares in percent"),
    min_effect: float = typer.Option(..., "--min-effect", help="smallest drop to catch (0.02)"),
    base: float = typer.Option(0.9, "--base", help="production's value (a proportion)"),
    margin: float = typer.Option(0.0, "--margin", help="the criterion's allowed drop"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.9, "--power"),
    tests: int = typer.Option(1, "--tests", help="tests α is split over (criteria × slices)"),
    max_duration: float | None = typer.Option(None, "--max-duration", help="per step, seconds"),
    paired: bool = typer.Option(False, "--paired", help="a paired canary (canary.paired)"),
    disagreement: float | None = typer.Option(
        None,
        "--disagreement",
        help="paired: share of requests on which exactly one version is right "
        "(default: the worst case, errors that never coincide)",
    ),
    stable_sample_rate: float = typer.Option(
        1.0,
        "--stable-sample-rate",
        help="share of production's calls logged during canary steps "
        "(logging.stable_sample_rate_during_rollouts)",
    ),
) -> None:
    """Print the samples and the time each canary step needs to decide."""
    from coalmine.analysis.plan import format_duration, plan_steps

    try:
        shares = [float(s) for s in steps.split(",") if s.strip()]
        plans = plan_steps(
            shares, rps=rps, label_rate=label_rate, min_effect=min_effect, base=base,
            margin=margin, alpha=alpha, power=power, tests=tests, max_duration_s=max_duration,
            paired=paired, disagreement=disagreement, stable_sample_rate=stable_sample_rate,
        )  # fmt: skip
    except ValueError as exc:
        err_console.print(f"[red]error[/red]: {exc}", highlight=False)
        raise typer.Exit(2) from None
    table = Table(
        title=f"Samples and time to catch a {min_effect:g} drop from {base:g} "
        f"(α = {alpha:g}{f'/{tests}' if tests > 1 else ''}, power {power:g}, "
        f"{rps:g} req/s, {label_rate:.0%} labelled)"
    )
    for col in ("step", "cand. labels/s", "anytime n", "anytime wait", "fixed n",
                "fixed wait"):  # fmt: skip
        table.add_column(col, justify="right")
    for p in plans:
        if p.anytime_samples is None:
            table.add_row(f"{p.share_percent:g}%", f"{p.samples_per_second:.3g}",
                          "—", "promote", "—", "—")  # fmt: skip
            continue
        style = None if p.can_decide else "red"
        table.add_row(
            f"{p.share_percent:g}%", f"{p.samples_per_second:.3g}", f"{p.anytime_samples:,}",
            format_duration(p.anytime_seconds), f"{p.fixed_samples:,}",
            format_duration(p.fixed_seconds), style=style,
        )  # fmt: skip
    console.print(table)
    console.print(
        "Anytime-valid: looked at continuously, stops as soon as the data decide (these are "
        "90%-power waits). Fixed horizon: valid only if nobody looks before its sample size.",
        highlight=False,
    )
    for p in plans:
        if (w := p.warning()) is not None:
            console.print(f"[red]warning[/red]: {w}", highlight=False)
