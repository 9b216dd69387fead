"""`coalmine.Router`: the gateway's split, mirror and log inside your own process.

For services that call their models in-process (no proxy hop at all):

    router = coalmine.Router("iris", {"v1": model_v1.predict, "v2": model_v2.predict},
                             client=coalmine.Client(url, token))
    answer = router.predict(features, key=user_id)   # answer.output, .version, .request_id
    ...
    router.close()                                   # flushes the log

- **Assignment** is the gateway's: `routing.split.route` on the live route's salt and canary
  weight, so a key gets the same version here as through `coalmine gateway`. The route is
  read from the control API (`GET /api/v1/routes/{model}`) and refreshed by a background
  thread every `refresh_s`; if the API is unreachable the last route keeps serving.
- **Mirror**: a sampled share of calls (the route's mirror share) is copied to the shadow by
  `mirror_workers` background threads through a queue of `mirror_queue` calls; a full
  queue drops the copy (counted), and nothing the shadow does (slow, raising) reaches the
  caller.
- **Logging**: every call (served and mirrored) becomes an item of the batch ingest, sent by
  a background thread every `flush_s` or `batch_size` items; at most `buffer_size` wait
  (more are dropped, counted). `close()` sends what is left.

`models` maps version names to callables taking the payload and returning the answer;
`load(version, url)` makes one for a version not in `models` (e.g. a candidate registered
after start; `http_model` calls a model server). `to_log(answer)` gives the (prediction,
scores) to log (default: the answer itself, no scores). A version the router cannot call
is a refusal, never a silent fallback. A canary that raises is logged as a 500 and, with
`failover` (default), the stable version answers instead, as the gateway's failover does.

The baseline of a rollout (a fresh stable instance) is the gateway's: here its share of keys
is served by the stable version.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coalmine.collect.reporter import Reporter
from coalmine.routing.split import mirror_sampled
from coalmine.routing.split import route as pick_role

__all__ = ["Answer", "Router", "RouterStats", "http_model"]

log = logging.getLogger(__name__)

Model = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Answer:
    output: Any
    version: str
    role: str
    request_id: str


@dataclass(slots=True)
class RouterStats:
    served: int = 0
    mirrored: int = 0
    mirror_dropped: int = 0  # the mirror queue was full
    # as of the last flush() or close(): items the ingest took (written or already logged),
    # and items dropped (buffer full, or a batch the ingest refused)
    logged: int = 0
    log_dropped: int = 0
    route_errors: int = 0  # refreshes that failed (the last route kept serving)
    by_version: dict[str, int] = field(default_factory=dict)


def http_model(url: str, model: str, timeout_s: float = 10.0) -> Model:
    """A callable posting a KServe V1 request to a model server's base `url`; returns the
    answer's JSON. The URL is the version's registered one (`load`'s second argument)."""
    import httpx

    http = httpx.Client(timeout=timeout_s)
    endpoint = f"{url.rstrip('/')}/v1/models/{model}:predict"

    def call(payload: Any) -> Any:
        response = http.post(endpoint, json=payload)
        response.raise_for_status()
        return response.json()

    return call


def v1_answer(answer: Any) -> tuple[Any, Any]:
    """`to_log` for a KServe V1 answer: its predictions and the scores beside them."""
    from coalmine.gateway.protocols import V1

    return V1.extract(answer, None)


class Router:
    def __init__(
        self,
        model: str,
        models: Mapping[str, Model],
        *,
        client: Any,
        load: Callable[[str, str], Model] | None = None,
        to_log: Callable[[Any], tuple[Any, Any]] | None = None,
        log_inputs: bool = True,
        refresh_s: float = 1.0,
        mirror_workers: int = 2,
        mirror_queue: int = 1000,
        batch_size: int = 200,
        flush_s: float = 0.5,
        buffer_size: int = 100_000,
        seed: int | None = None,
        failover: bool = True,
    ) -> None:
        self.model = model
        self.client = client  # a coalmine.Client
        self._models = dict(models)
        self._load = load
        self._to_log = to_log or (lambda answer: (answer, None))
        self._log_inputs = log_inputs
        self.refresh_s = refresh_s
        self.failover = failover
        self.stats = RouterStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._route: dict[str, Any] = client.route(model)  # fails loudly at start
        self._stop = threading.Event()
        self.reporter = Reporter(
            client, batch_size=batch_size, flush_s=flush_s, buffer_size=buffer_size
        )
        self._mirror: queue.Queue[tuple[Any, str, str, dict[str, Any] | None] | None] = queue.Queue(
            maxsize=mirror_queue
        )
        self._threads = [
            threading.Thread(target=self._refresh_loop, name="coalmine-router-route", daemon=True),
        ] + [
            threading.Thread(
                target=self._mirror_loop, name=f"coalmine-router-mirror-{i}", daemon=True
            )
            for i in range(mirror_workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the caller's path -------------------------------------------------------------------
    @property
    def route(self) -> dict[str, Any]:
        """The live route this router splits by (as of the last refresh)."""
        return self._route

    def assign(self, key: str | None, route: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """(role, version) for a call with sticky `key`: the gateway's assignment, under
        `route` (default: the router's live route)."""
        r = self._route if route is None else route
        with self._lock:  # random.Random is not to be shared across threads unlocked
            role = pick_role(key, r["salt"], r["canary_weight_bp"], self._rng)
        if role == "canary" and r["canary"]:
            return "canary", r["canary"]
        return "stable", r["stable"]

    def predict(
        self,
        payload: Any,
        key: str | None = None,
        *,
        request_id: str | None = None,
        slices: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Call the version `key` is assigned to, log the call, maybe mirror it; return its
        answer. The stable version's exception is the caller's (logged as a 500 first)."""
        request_id = request_id or uuid.uuid4().hex
        route = self._route
        role, version = self.assign(key, route)  # one snapshot of the route per call
        call = self._callable(version, route)
        shadow = route.get("shadow")
        if shadow and route.get("mirror_bp", 0) > 0:
            with self._lock:
                sampled = mirror_sampled(self._rng, route["mirror_bp"])
            if sampled:
                try:
                    self._mirror.put_nowait((payload, request_id, shadow, dict(slices or {})))
                except queue.Full:
                    self.stats.mirror_dropped += 1
        try:
            output = self._timed(call, payload, request_id, version, role, slices)
        except Exception:
            if role != "canary" or not self.failover:
                raise
            # the candidate's failure is logged (its 500 counts against it); the user gets
            # production's answer, as the gateway's canary failover does
            role, version = "stable", route["stable"]
            call = self._callable(version, route)
            output = self._timed(call, payload, request_id, version, role, slices)
        self.stats.served += 1
        self.stats.by_version[version] = self.stats.by_version.get(version, 0) + 1
        return Answer(output, version, role, request_id)

    def _callable(self, version: str, route: Mapping[str, Any]) -> Model:
        call = self._models.get(version)
        if call is None and self._load is not None and version in route.get("urls", {}):
            call = self._load(version, route["urls"][version])
            self._models[version] = call
        if call is None:
            raise LookupError(f"Router({self.model!r}) has no callable for version {version!r}")
        return call

    def _timed(
        self, call: Model, payload: Any, request_id: str, version: str, role: str,
        slices: Mapping[str, Any] | None,
    ) -> Any:  # fmt: skip
        ts = time.time()
        start = time.perf_counter()
        try:
            output = call(payload)
        except Exception:
            self._log(request_id, version, role, ts, start, 500, None, payload, slices)
            raise
        self._log(request_id, version, role, ts, start, 200, output, payload, slices)
        return output

    def _log(
        self, request_id: str, version: str, role: str, ts: float, start: float, status: int,
        output: Any, payload: Any, slices: Mapping[str, Any] | None,
    ) -> None:  # fmt: skip
        item: dict[str, Any] = {
            "request_id": request_id, "model": self.model, "version": version, "role": role,
            "ts": ts, "latency_ms": (time.perf_counter() - start) * 1000.0, "status": status,
        }  # fmt: skip
        if status == 200:
            try:
                item["prediction"], item["scores"] = self._to_log(output)
            except Exception:  # a log extractor's bug must not fail the call
                log.exception("Router: to_log failed; the call is logged without its answer")
        if self._log_inputs:
            item["input"] = payload
        if slices:
            item["slices"] = dict(slices)
        self.reporter.add(item)

    # -- background work --------------------------------------------------------------------
    def _mirror_loop(self) -> None:
        while True:
            job = self._mirror.get()
            if job is None:
                return
            payload, request_id, version, slices = job
            try:
                call = self._callable(version, self._route)
                self._timed(call, payload, request_id, version, "shadow", slices)
                self.stats.mirrored += 1
            except Exception as exc:  # the shadow's failure is logged (a 500), never raised
                log.debug("Router: shadow %s failed: %s", version, exc)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._route = self.client.route(self.model)
            except Exception as exc:  # keep serving the last route
                self.stats.route_errors += 1
                log.warning("Router: route refresh failed (%s); keeping the last route", exc)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the calls logged so far are sent (or `timeout_s` passes)."""
        self.reporter.flush(timeout_s)
        self.stats.logged, self.stats.log_dropped = self.reporter.logged, self.reporter.dropped

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish queued mirror calls, send every logged item, stop the threads."""
        for _ in self._threads[1:]:
            try:
                self._mirror.put(None, timeout=timeout_s)
            except queue.Full:
                break
        for thread in self._threads[1:]:
            thread.join(timeout_s)
        self._stop.set()
        self._threads[0].join(timeout_s)
        self.reporter.close(timeout_s)
        self.stats.logged, self.stats.log_dropped = self.reporter.logged, self.reporter.dropped

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
