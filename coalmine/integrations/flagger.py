"""Flagger's webhook gates answered from Coalmine's judgement.

    POST /api/v1/judge/flagger/{hook}    hook: pre-rollout | rollout | confirm-traffic-increase
                                               | confirm-promotion | rollback

What Flagger sends (pkg/controller/webhook.go `CallWebhook`, v1beta1 `CanaryWebhookPayload`):
a POST with `Content-Type: application/json` and no other header, body
`{"name", "namespace", "phase", "checksum", "metadata": {string: string}}` where metadata is
the webhook's own from the Canary. Any status above 202 (or a timeout, 10 s by default)
is an error. What an error means depends on the hook type (scheduler_hooks.go):
pre-rollout and rollout count a failed check (at the analysis `threshold`, Flagger rolls
back); confirm-traffic-increase and confirm-promotion halt the canary where it is, without
a failed check; rollback rolls the canary back on 2xx, and an error means "no rollback".

So the answers (200 = the gate is open, 412 = closed, with the judgement as body):

    pre-rollout, rollout               200 unless the judgement FAILs
    confirm-traffic-increase           200 only on PASS: a step advances on evidence
    confirm-promotion                  200 only on PASS
    rollback                           200 only on FAIL

Mapping the canary to a Coalmine model: `metadata.model` (default: the canary's name);
versions `metadata.candidate` (default: the canary's name, the target Deployment whose
pods are the candidate) and `metadata.baseline` (default: `<name>-primary`, Flagger's
primary Deployment) — the version names the model servers or the collector log.
`metadata.token` is the judge token (Flagger cannot send headers); `mode`, `weight`,
`since` and `spec` (a rollout spec as a YAML or JSON string) are as for Argo. The window
starts when Coalmine first sees the canary's checksum (pre-rollout, before any traffic),
so a Deployment name reused by every release never mixes releases. An unknown metadata
key is refused (422) rather than ignored: a misspelt `candidate` must not judge the wrong
version. Note that Flagger reads a refused `rollback` call as "no rollback": pair it with a
`rollout` hook, which counts the refusal as a failed check.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import yaml
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from coalmine.config import ConfigError
from coalmine.integrations.auth import JudgeAuth
from coalmine.integrations.decision import Verdict
from coalmine.integrations.query import make_query
from coalmine.integrations.service import JudgeService

__all__ = ["HOOKS", "FlaggerPayload", "flagger_router", "gate_open"]

Hook = Literal[
    "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "rollback"
]
HOOKS: tuple[str, ...] = (
    "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "rollback",
)  # fmt: skip
# what Flagger itself puts in an event hook's metadata; never ours to refuse
_FLAGGER_KEYS = frozenset({"eventMessage", "eventType", "timestamp"})
_OURS = frozenset({"token", "model", "candidate", "baseline", "mode", "weight", "since", "spec"})
_MAX_CANARIES = 1024


class FlaggerPayload(BaseModel):
    """Flagger's CanaryWebhookPayload (extra fields a later Flagger adds are ignored)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=253)
    namespace: str = Field(max_length=253)
    phase: str = ""
    checksum: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


def gate_open(hook: str, verdict: Verdict) -> bool:
    """Whether `hook` answers 2xx for `verdict` (module docstring)."""
    if hook in ("pre-rollout", "rollout"):
        return verdict != "FAIL"
    if hook == "rollback":
        return verdict == "FAIL"
    return verdict == "PASS"  # confirm-traffic-increase, confirm-promotion


def _number(meta: dict[str, str], key: str, errors: list[tuple[str, str]]) -> float | None:
    raw = meta.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        errors.append((f"metadata.{key}", f"must be a number, got {raw!r}"))
        return None
    if not math.isfinite(value):
        errors.append((f"metadata.{key}", "must be finite"))
        return None
    return value


def _spec(meta: dict[str, str], errors: list[tuple[str, str]]) -> Any:
    raw = meta.get("spec")
    if not raw:
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        errors.append(("metadata.spec", f"not YAML or JSON: {str(exc).splitlines()[0]}"))
        return None


def flagger_router(
    service: JudgeService, auth: JudgeAuth, clock: Callable[[], float] = time.time
) -> APIRouter:
    router = APIRouter(tags=["judge"])
    first_seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()
    lock = threading.Lock()

    def _window_start(p: FlaggerPayload) -> float:
        key = (p.namespace, p.name, p.checksum)
        with lock:
            if key not in first_seen:
                first_seen[key] = clock()
                while len(first_seen) > _MAX_CANARIES:
                    first_seen.popitem(last=False)
            return first_seen[key]

    @router.post("/flagger/{hook}", responses={412: {"description": "the gate is closed"}})
    def flagger_hook(hook: Hook, payload: FlaggerPayload) -> JSONResponse:
        """A Flagger webhook of type `hook`: 200 opens the gate, 412 closes it."""
        meta = payload.metadata
        auth.check(meta.get("token"))
        errors: list[tuple[str, str]] = [
            (f"metadata.{k}", f"unknown key; known: {', '.join(sorted(_OURS))}")
            for k in meta
            if k not in _OURS and k not in _FLAGGER_KEYS
        ]
        weight = _number(meta, "weight", errors)
        since = _number(meta, "since", errors)
        spec = _spec(meta, errors)
        if errors:
            raise ConfigError("metadata", errors)
        q = make_query(
            model=meta.get("model") or payload.name,
            candidate=meta.get("candidate") or payload.name,
            baseline=meta.get("baseline") or f"{payload.name}-primary",
            mode=meta.get("mode") or "canary",
            spec=spec,
            weight=weight,
            not_before=since if since is not None else _window_start(payload),
            where="metadata.",
        )
        out = service.judge(q)
        is_open = gate_open(hook, out["verdict"])
        out = {"hook": hook, "gate": "open" if is_open else "closed", **out}
        return JSONResponse(out, status_code=200 if is_open else 412)

    return router
