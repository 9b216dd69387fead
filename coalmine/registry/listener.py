"""Carry rollout outcomes to the model registry, off the controller's path.

The controller calls `on_transition(payload)` with the webhook body of every transition
(`coalmine.rollout.controller.transition_payload`). It returns at once: registry calls are
network or disk I/O, so they run on one background thread, retried with backoff, and a
registry that is down never slows a rollout. Only endings matter here:

    promoted       -> registry.on_promoted       (alias `champion` moves, version tagged)
    rolled_back    -> registry.on_rolled_back    (version tagged with the reason)
    model_rollback -> registry.on_model_rollback (`coalmine rollback`: the replaced version
                      tagged rolled back, `champion` back on the restored one)

Deliveries live in memory; an outcome in flight when the controller dies is not lost for
good: `catch_up(recent rollouts)` at start-up writes every ending the registry has not
recorded yet.

A rollout whose candidate was never linked to a registry version (`registry.link`, done by
`prepare_candidate`) is skipped: most rollouts need not come from a registry. The registry
writes are idempotent, so a retried or replayed payload is harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter

from coalmine.registry.base import ModelRegistry, ModelVersionRef

__all__ = ["RegistryListener"]

log = logging.getLogger(__name__)

UPDATES = Counter(
    "coalmine_registry_updates_total",
    "Rollout outcomes written to the model registry, by result",
    ["result"],
)

_HANDLED = ("promoted", "rolled_back")
MODEL_ROLLBACK = "model_rollback"


def _handled(payload: Mapping[str, Any]) -> bool:
    # a model_rollback leaves its rollout `promoted`: the kind tells it from the promotion
    if payload.get("kind") == MODEL_ROLLBACK:
        return True
    return payload.get("to_phase") in _HANDLED and payload.get("from_phase") != "promoted"


_STOP = object()


class RegistryListener:
    """Queue transitions with `on_transition`; `close()` finishes the queue and stops."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        attempts: int = 5,
        backoff_s: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        self.registry = registry
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_transition(self, payload: Mapping[str, Any]) -> None:
        """Non-blocking: queue an ending for the worker thread; ignore other transitions."""
        if not _handled(payload):
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(dict(payload))
        except queue.Full:
            UPDATES.labels("dropped").inc()
            log.error(
                "registry update for rollout %s dropped: queue full", payload.get("rollout_id")
            )

    def apply(self, payload: Mapping[str, Any]) -> ModelVersionRef | None:
        """Write one ending to the registry now (blocking); the version updated, or None.

        Also the way to replay an outcome, e.g. for rollouts that ended while the controller
        was down: the writes are idempotent.
        """
        if not _handled(payload):
            return None
        if payload.get("kind") == MODEL_ROLLBACK:
            return self._model_rollback(payload)
        phase = payload.get("to_phase")
        version = self.registry.find(str(payload["model"]), str(payload["candidate"]))
        if version is None:
            UPDATES.labels("not_linked").inc()
            return None
        rollout_id = int(payload["rollout_id"])
        reason = str(payload.get("reason") or phase)
        if phase == "promoted":
            self.registry.on_promoted(version, rollout_id, reason)
        else:
            self.registry.on_rolled_back(version, rollout_id, reason)
        UPDATES.labels("ok").inc()
        log.info(
            "registry: %s version %s marked %s (rollout %s)",
            version.name,
            version.version,
            phase,
            rollout_id,
        )
        return version

    def _model_rollback(self, payload: Mapping[str, Any]) -> ModelVersionRef | None:
        model = str(payload["model"])
        replaced = self.registry.find(model, str(payload["candidate"]))
        previous = payload.get("previous_stable")
        restored = self.registry.find(model, str(previous)) if previous else None
        if replaced is None and restored is None:
            UPDATES.labels("not_linked").inc()
            return None
        rollout_id = int(payload["rollout_id"])
        reason = str(payload.get("reason") or MODEL_ROLLBACK)
        self.registry.on_model_rollback(replaced, restored, rollout_id, reason)
        UPDATES.labels("ok").inc()
        log.info(
            "registry: %s rolled back to %s (rollout %s)",
            model,
            restored or "no version",
            rollout_id,
        )
        return restored or replaced

    def catch_up(self, rollouts: Iterable[Mapping[str, Any]]) -> list[ModelVersionRef]:
        """Write the endings of `rollouts` (`RolloutRecord.to_dict()` rows, e.g. the store's
        `recent()`) that the registry has not recorded; blocking. The versions updated.

        Per Coalmine model only the latest promotion is replayed, so an older one never
        takes the champion alias back.
        """
        ended = sorted(
            (r for r in rollouts if r.get("phase") in _HANDLED),
            key=lambda r: (float(r.get("ended_at") or 0.0), int(r["id"])),
        )
        latest_promotion = {r["model"]: r["id"] for r in ended if r["phase"] == "promoted"}
        updated = []
        for r in ended:
            if r["phase"] == "promoted" and latest_promotion[r["model"]] != r["id"]:
                continue
            version = self.registry.find(str(r["model"]), str(r["candidate"]))
            if version is None:
                continue
            recorded = self.registry.recorded(version)
            if recorded == (r["phase"], str(r["id"])):
                continue
            if r["phase"] == "promoted" and recorded == ("rolled_back", str(r["id"])):
                continue  # promoted, then undone by `coalmine rollback`: never re-promote it
            payload = {
                "to_phase": r["phase"],
                "model": r["model"],
                "candidate": r["candidate"],
                "rollout_id": r["id"],
                "reason": r.get("reason"),
            }
            done = self.apply(payload)
            if done is not None:
                updated.append(done)
        return updated

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (up to `timeout` seconds) and stop the worker."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("registry listener: updates still pending after %.0fs", timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="coalmine-registry", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._deliver(item)

    def _deliver(self, payload: dict[str, Any]) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.apply(payload)
                return
            except Exception as exc:
                if attempt == self.attempts:
                    UPDATES.labels("failed").inc()
                    log.error(
                        "registry update for rollout %s failed after %d attempts: %s",
                        payload.get("rollout_id"),
                        attempt,
                        exc,
                    )
                    return
                log.warning("registry update failed (attempt %d): %s; retrying", attempt, exc)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
