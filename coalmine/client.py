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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["TERMINAL_PHASES", "Client", "CoalmineAPIError", "Rollout"]

TERMINAL_PHASES = frozenset({"promoted", "rolled_back", "aborted", "completed"})


class CoalmineAPIError(Exception):
    """The API refused a request: `status` (HTTP), `message`, and per-field `errors`."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None):
        self.status = status
        self.message = message
        self.errors = errors or []
        detail = "".join(f"\n  {e.get('field')}: {e.get('reason')}" for e in self.errors)
        super().__init__(f"HTTP {status}: {message}{detail}")


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

    def __repr__(self) -> str:
        return f"<Rollout #{self.id} {self.data.get('model')} {self.data.get('phase')}>"


class Client:
    """A client of the control API. `url` and `token` default to $COALMINE_API_URL and
    $COALMINE_TOKEN."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 10.0
    ) -> None:
        url = url or os.environ.get("COALMINE_API_URL") or "http://127.0.0.1:8900"
        token = token or os.environ.get("COALMINE_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
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
            spec = yaml.safe_load(Path(spec).read_text()) or {}
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
        rollout_id: int,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the rollout ends; calls `on_event` for every new event. Returns the
        final status. Raises TimeoutError after `timeout` seconds."""
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
