"""CLI: `coalmine rollout start|status|list|pause|resume|promote|abort|approve` and
`coalmine rollback MODEL`. Thin: every command is one SDK call to the control API.

`rollout start --wait` follows the rollout with a live display and exits 0 when it is
promoted (or a shadow-only rollout completed), 1 when it was rolled back or aborted, and 2 on
any error, so a pipeline step can gate on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # httpx and the SDK load when a command runs, not for `--help`
    from coalmine.client import Client

__all__ = ["EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "rollback_command", "rollout_app"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

rollout_app = typer.Typer(
    help="Start and steer rollouts (talks to the control API).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

ApiUrl = typer.Option(
    None,
    "--api-url",
    envvar="COALMINE_API_URL",
    help="control API base URL (default http://127.0.0.1:8900)",
)
Token = typer.Option(None, "--token", envvar="COALMINE_TOKEN", help="control API token")
ConfigFile = typer.Option(
    None,
    "--config",
    envvar="COALMINE_CONFIG",
    help="the config file `coalmine serve` was given: its api: block is the API's address",
)


def _client(api_url: str | None, token: str | None, config: Path | None = None) -> Client:
    from coalmine.client import Client
    from coalmine.config import ConfigError

    try:
        return Client(api_url, token, config=config)
    except (ConfigError, OSError) as exc:
        raise _fail(f"--config {config}: {exc}") from None


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error[/red] {message}", highlight=False)
    return typer.Exit(EXIT_ERROR)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import httpx

    from coalmine.client import CoalmineAPIError, CoalmineConnectionError

    try:
        return fn(*args, **kwargs)
    except CoalmineAPIError as exc:
        raise _fail(str(exc)) from None
    except CoalmineConnectionError as exc:
        raise _fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the control API: {exc}") from None


def _resolve(client: Client, target: str) -> int:
    """A rollout id, or a model name meaning its active (else latest) rollout."""
    if target.isascii() and target.isdigit():
        return int(target)
    found = _call(client.rollouts, target, active=True) or _call(client.rollouts, target)
    if not found:
        raise _fail(f"model {target!r} has no rollout")
    return int(found[0]["id"])


def _exit_code(status: dict[str, Any]) -> int:
    return EXIT_OK if status["phase"] in ("promoted", "completed") else EXIT_FAILED


def _render(status: dict[str, Any], events: list[dict[str, Any]]) -> Group:
    from rich.progress_bar import ProgressBar

    steps = status["steps"]
    phase = status["phase"]
    colour = {
        "promoted": "green",
        "completed": "green",
        "rolled_back": "red",
        "rolling_back": "red",
        "aborted": "red",
        "paused": "yellow",
    }.get(phase, "cyan")
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "rollout",
        f"#{status['id']} {status['model']}: {status['candidate']} "
        f"over {status['previous_stable']}",
    )
    step_text = (
        f"step {status['step_index'] + 1}/{len(steps)}"
        if phase == "canary" or status.get("paused_phase") == "canary"
        else ""
    )
    head.add_row("phase", Text(f"{phase} {step_text}".strip(), style=f"bold {colour}"))
    head.add_row("canary", f"{status['canary_weight']:g}%   mirror {status['mirror_share']:g}%")
    if status.get("verdict"):
        head.add_row("verdict", str(status["verdict"]))
    if status.get("awaiting_approval") is not None:
        head.add_row(
            "waiting",
            f"approval before the {status['awaiting_approval']:g}% step "
            f"(coalmine rollout approve {status['id']})",
        )
    bar = ProgressBar(total=100, completed=status["canary_weight"], width=40)
    log = Table.grid(padding=(0, 1))
    for e in events[-8:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
        log.add_row(stamp, f"{e['from_phase']}→{e['to_phase']}", Text(e["reason"]))
    return Group(head, bar, log)


def follow(client: Client, rollout_id: int, poll_s: float = 1.0) -> int:
    """Live display until the rollout ends; returns the exit code."""
    from rich.live import Live

    from coalmine.client import TERMINAL_PHASES

    events: list[dict[str, Any]] = []
    status = _call(client.status, rollout_id)
    with Live(
        _render(status, events), console=console, refresh_per_second=4, transient=False
    ) as live:
        while True:
            after = events[-1]["id"] if events else 0
            events.extend(_call(client.events, rollout_id, after))
            status = _call(client.status, rollout_id)
            live.update(_render(status, events))
            if status["phase"] in TERMINAL_PHASES:
                break
            time.sleep(poll_s)
    outcome = status["phase"]
    style = "green" if _exit_code(status) == EXIT_OK else "red"
    console.print(f"[{style}]{outcome}[/{style}]: {status.get('reason') or ''}", highlight=False)
    return _exit_code(status)


@rollout_app.command("start")
def start(
    model: str = typer.Argument(..., help="model name"),
    candidate: str = typer.Option(..., "--candidate", help="candidate version name"),
    url: str = typer.Option(..., "--url", help="base URL of the candidate's model server"),
    spec: Path | None = typer.Option(None, "--spec", help="rollout spec YAML (default: defaults)"),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="base URL of a fresh instance of the stable version to judge "
        "the candidate against (routed the canary's share; the shadow's noise floor)",
    ),
    wait: bool = typer.Option(False, "--wait", help="follow until it ends; exit 0/1/2"),
    poll: float = typer.Option(1.0, "--poll", help="seconds between status polls with --wait"),
    api_url: str | None = ApiUrl,
    token: str | None = Token,
    config: Path | None = ConfigFile,
) -> None:
    """Start a rollout of CANDIDATE (served at URL) for MODEL."""
    if spec is not None and not spec.exists():
        raise _fail(f"--spec {spec}: no such file")
    with _client(api_url, token, config) as client:
        try:
            rollout = _call(client.start_rollout, model, candidate, url, spec, baseline=baseline)
        except ValueError as exc:  # unreadable YAML
            raise _fail(f"--spec {spec}: {exc}") from None
        console.print(f"started rollout #{rollout.id} of {model} {candidate}", highlight=False)
        for warning in rollout.data.get("warnings") or []:
            err.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
        if wait:
            raise typer.Exit(follow(client, rollout.id, poll))


@rollout_app.command("status")
def status(
    target: str = typer.Argument(..., help="rollout id, or a model name (its latest rollout)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
    api_url: str | None = ApiUrl,
    token: str | None = Token,
    config: Path | None = ConfigFile,
) -> None:
    """Show one rollout and its recent events."""
    with _client(api_url, token, config) as client:
        rid = _resolve(client, target)
        data = _call(client.status, rid)
        if json_out:
            console.print_json(data=data)
            return
        console.print(_render(data, _call(client.events, rid)))


@rollout_app.command("list")
def list_(
    model: str | None = typer.Option(None, "--model", help="only this model"),
    active: bool = typer.Option(False, "--active", help="only active rollouts"),
    wide: bool = typer.Option(False, "--wide", help="print reasons whole (wrapped), not cut"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
    api_url: str | None = ApiUrl,
    token: str | None = Token,
    config: Path | None = ConfigFile,
) -> None:
    """List rollouts, newest first."""
    with _client(api_url, token, config) as client:
        rows = _call(client.rollouts, model, active)
    if json_out:
        console.print_json(data=rows)
        return
    table = Table("id", "model", "candidate", "phase", "canary", "outcome", "reason")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["model"],
            r["candidate"],
            r["phase"],
            f"{r['canary_weight']:g}%",
            r["outcome"] or "",
            (r["reason"] or "") if wide else _cut(r["reason"] or "", 80),
        )
    console.print(table)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _command(name: str, help_text: str) -> None:
    def run(
        target: str = typer.Argument(..., help="rollout id, or a model name"),
        reason: str | None = typer.Option(None, "--reason", help="recorded with the event"),
        api_url: str | None = ApiUrl,
        token: str | None = Token,
        config: Path | None = ConfigFile,
    ) -> None:
        with _client(api_url, token, config) as client:
            rid = _resolve(client, target)
            data = _call(getattr(client, name), rid, reason)
        console.print(f"rollout #{rid}: {data['phase']}", highlight=False)

    run.__doc__ = help_text
    rollout_app.command(name)(run)


for _name, _help in (
    ("pause", "Hold a rollout at its current weights."),
    ("resume", "Resume a paused rollout (its step's clock restarts)."),
    ("promote", "Promote now, skipping the remaining steps."),
    ("abort", "Stop a rollout and send all traffic back to the stable version."),
    ("approve", "Approve the next gated canary step."),
):
    _command(_name, _help)


def rollback_command(
    model: str = typer.Argument(..., help="model name"),
    api_url: str | None = ApiUrl,
    token: str | None = Token,
    config: Path | None = ConfigFile,
) -> None:
    """Restore the stable version that the last promotion of MODEL replaced, at once."""
    with _client(api_url, token, config) as client:
        data = _call(client.rollback, model)
    console.print(
        f"{model}: stable is {data['stable']} again (was {data['replaced']})", highlight=False
    )
