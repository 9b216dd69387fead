"""The Python SDK: `coalmine.Client(url, token)` talks to the control API.

    client = coalmine.Client("http://127.0.0.1:8900", token)
    rollout = client.start_rollout("iris", candidate="v2", url="http://10.0.0.5:9000")
    final = rollout.wait()          # blocks until promoted / rolled_back / aborted / completed
    if final["outcome"] != "promoted":
        print(final["reason"])

httpx (sync) is fine here: the SDK is on no hot path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DEFAULT_API_URL",
    "TERMINAL_PHASES",
    "Client",
    "CoalmineAPIError",
    "CoalmineConnectionError",
    "Rollout",
    "api_address",
]

DEFAULT_API_URL = "http://127.0.0.1:8900"

TERMINAL_PHASES = frozenset({"promoted", "rolled_back", "aborted", "completed"})


class CoalmineAPIError(Exception):
    """The API refused a request: `status` (HTTP), `message`, and per-field `errors`."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None):
        self.status = status
        self.message = message
        self.errors = errors or []
        detail = "".join(f"\n  {e.get('field')}: {e.get('reason')}" for e in self.errors)
        super().__init__(f"HTTP {status}: {message}{detail}")


class CoalmineConnectionError(ConnectionError):
    """The control API could not be reached at `url` (refused, unresolvable, timed out)."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.url = url
        super().__init__(f"cannot reach the control API at {url}: {cause}")


def api_address(config: str | Path | None = None) -> tuple[str, str | None]:
    """The control API's base URL and token from a config file (the `api:` block), as
    `coalmine serve` with that file listens: `config`, else $COALMINE_CONFIG. Returns the
    default address and no token when neither is set."""
    path = config or os.environ.get("COALMINE_CONFIG")
    if not path:
        return DEFAULT_API_URL, None
    from coalmine.config import load_config  # pydantic: only when a file is named

    api = load_config(path).api
    # a server bound to every interface is reached on loopback from this machine
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(api.host, api.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{api.port}", api.token


class Rollout:
    """A handle on one rollout."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.id: int = data["id"]
        self.data = data

    def status(self) -> dict[str, Any]:
        self.data = self.client.status(self.id)
        return self.data

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return self.client.events(self.id, after)

    def wait(
        self,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        self.data = self.client.wait(self.id, timeout=timeout, poll_s=poll_s, on_event=on_event)
        return self.data

    def __getitem__(self, key: str) -> Any:
        """The status fields as of the last call (`rollout["id"]`, `rollout["phase"]`)."""
        return self.data[key]

    def __repr__(self) -> str:
        return f"<Rollout #{self.id} {self.data.get('model')} {self.data.get('phase')}>"


class Client:
    """A client of the control API.

    The address is, first found: `url`; $COALMINE_API_URL; the `api:` block of the config
    file `config` or $COALMINE_CONFIG (the file `coalmine serve` was given); the default
    http://127.0.0.1:8900. The token: `token`; $COALMINE_TOKEN; the config file's `api.token`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        config: str | Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        from_file, file_token = (None, None)
        missing = not (url or os.environ.get("COALMINE_API_URL")) or not (
            token or os.environ.get("COALMINE_TOKEN")
        )
        if missing and (config or os.environ.get("COALMINE_CONFIG")):
            from_file, file_token = api_address(config)
        url = url or os.environ.get("COALMINE_API_URL") or from_file or DEFAULT_API_URL
        token = token or os.environ.get("COALMINE_TOKEN") or file_token
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CoalmineConnectionError(self.url, exc) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text}
            message = body.get("error") or body.get("detail") or response.reason_phrase
            if not isinstance(message, str):
                message = str(message)
            raise CoalmineAPIError(response.status_code, message, body.get("errors"))
        return response.json()

    # -- rollouts ---------------------------------------------------------------------------

    def start_rollout(
        self,
        model: str,
        candidate: str,
        url: str,
        spec: dict[str, Any] | str | Path | None = None,
        *,
        baseline: str | None = None,
    ) -> Rollout:
        """Start a rollout; `spec` is a mapping, a YAML file path, or None for defaults.

        `baseline`: base URL of a fresh instance of the stable version to judge the
        candidate against (the same as `spec: {baseline: URL}`; this one wins).
        """
        if isinstance(spec, str | Path):
            from coalmine.config import ConfigError, read_yaml

            try:  # read_yaml also refuses a key given twice
                spec = read_yaml(spec) or {}
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if baseline is not None:
            spec = {**(spec or {}), "baseline": baseline}
        body = {"model": model, "candidate": candidate, "url": url, "spec": spec}
        return Rollout(self, self._call("POST", "/rollouts", json=body))

    def status(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/rollouts/{rollout_id}"))

    def rollouts(self, model: str | None = None, active: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"active": active}
        if model:
            params["model"] = model
        return list(self._call("GET", "/rollouts", params=params))

    def active_rollout(self, model: str) -> dict[str, Any] | None:
        found = self.rollouts(model, active=True)
        return found[0] if found else None

    def events(self, rollout_id: int, after: int = 0) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/rollouts/{rollout_id}/events", params={"after": after}))

    def webhook_deliveries(self, rollout_id: int) -> list[dict[str, Any]]:
        """The rollout's webhook deliveries: url, seq, state, attempts, last_error."""
        return list(self._call("GET", f"/rollouts/{rollout_id}/webhooks"))

    def judgement(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/rollouts/{rollout_id}/judgement"))

    def _command(self, rollout_id: int, name: str, reason: str | None) -> dict[str, Any]:
        body = {"reason": reason} if reason else None
        return dict(self._call("POST", f"/rollouts/{rollout_id}/{name}", json=body))

    def pause(self, rollout_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._command(rollout_id, "pause", reason)

    def resume(self, rollout_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._command(rollout_id, "resume", reason)

    def promote(self, rollout_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._command(rollout_id, "promote", reason)

    def abort(self, rollout_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._command(rollout_id, "abort", reason)

    def approve(self, rollout_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._command(rollout_id, "approve", reason)

    def wait(
        self,
        rollout: int | Rollout | Mapping[str, Any],
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the rollout ends; calls `on_event` for every new event. Returns the
        final status. Raises TimeoutError after `timeout` seconds.

        `rollout`: its id, the `Rollout` that `start_rollout` returned, or a status dict."""
        rollout_id = _rollout_id(rollout)
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            if on_event is not None:
                for event in self.events(rollout_id, seen):
                    seen = max(seen, int(event["id"]))
                    on_event(event)
            status = self.status(rollout_id)
            if status["phase"] in TERMINAL_PHASES:
                if on_event is not None:
                    for event in self.events(rollout_id, seen):
                        on_event(event)
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"rollout {rollout_id} still {status['phase']}")
            time.sleep(poll_s)

    # -- predictions collected without the gateway -----------------------------------------

    def route(self, model: str) -> dict[str, Any]:
        """The live route of `model` as an in-process router splits it: stable, canary,
        canary_weight_bp, shadow, mirror_bp, salt, rollout_id, revision, urls."""
        return dict(self._call("GET", f"/routes/{model}"))

    def ingest(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 500,
        retries: int = 2,
    ) -> dict[str, int]:
        """Log calls made without the gateway (`POST /predictions`), `batch_size` a request.

        Each item: `request_id`, `model`, `version`, `latency_ms`, and optionally `role`
        (default: the live route's role of that version), `ts`, `status` (200),
        `error_class`, `prediction`, `scores`, `input`, `slices`, or the request's
        `headers` and `body` for the API to read slices and input from. Returns how many rows
        were `written` and how many were `duplicates` (already logged: the endpoint is
        idempotent on model, request id and role, which is why a batch that could not be
        sent is retried `retries` times). Raises CoalmineAPIError (422, naming the item
        and field) for an invalid batch; the batches before it were written.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        written = duplicates = 0
        batch: list[Mapping[str, Any]] = []

        def send() -> None:
            nonlocal written, duplicates
            for attempt in range(retries + 1):
                try:
                    answer = self._call("POST", "/predictions", json={"items": batch})
                    break
                except CoalmineConnectionError:
                    if attempt == retries:
                        raise
                    time.sleep(0.2 * 2**attempt)
            written += int(answer["written"])
            duplicates += int(answer["duplicates"])
            batch.clear()

        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                send()
        if batch:
            send()
        return {"written": written, "duplicates": duplicates}

    # -- models -----------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/models"))

    def model(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/models/{name}"))

    def add_version(self, model: str, version: str, url: str) -> dict[str, str]:
        body = {"version": version, "url": url}
        return dict(self._call("POST", f"/models/{model}/versions", json=body))

    def rollback(self, model: str) -> dict[str, Any]:
        """Restore the stable version the last promotion of `model` replaced."""
        return dict(self._call("POST", f"/models/{model}/rollback"))


def _rollout_id(rollout: int | Rollout | Mapping[str, Any]) -> int:
    if isinstance(rollout, Rollout):
        return rollout.id
    if isinstance(rollout, Mapping):
        return int(rollout["id"])
    if isinstance(rollout, bool) or not isinstance(rollout, int):
        raise TypeError(f"expected a rollout id, a Rollout or a status dict, got {rollout!r}")
    return rollout
