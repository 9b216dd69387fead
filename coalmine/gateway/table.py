"""The live route table: the store's routes, compiled for the request path and kept fresh.

A thread polls `RouteRepository.load_all()` every `gateway.routing_poll_s` and swaps in a
new dict of compiled routes, so weight, mirror and version changes apply within a second
without a restart. On PostgreSQL a `RouteListener` also wakes that thread on every route
NOTIFY, so each replica of the gateway reloads a change milliseconds after it commits; the
polling stays as the fallback for a notification missed while the listener reconnects.
Compiling moves every per-route decision (URLs, sticky source, slice fields, metric
children, guard state) out of the request path.
"""

from __future__ import annotations

import logging
import threading

from coalmine.config import CoalmineConfig, SliceField, StickyKey, reads_json_body
from coalmine.gateway.guard import FastGuard
from coalmine.gateway.metrics import RoleMetrics, role_metrics
from coalmine.routing.state import RouteState
from coalmine.store.route_events import RouteListener, supports_notify
from coalmine.store.routes import RouteRepository

__all__ = ["CompiledRoute", "RouteTable"]

log = logging.getLogger(__name__)

DEFAULT_STICKY = StickyKey(header="X-User-Id")


class CompiledRoute:
    """One model's route as the request path uses it."""

    __slots__ = (
        "baseline_bp",
        "baseline_metrics",
        "baseline_url",
        "canary",
        "canary_metrics",
        "canary_url",
        "mirror_bp",
        "model",
        "needs_json",
        "paired",
        "paired_metrics",
        "rollout_id",
        "salt",
        "scores_field",
        "shadow",
        "shadow_metrics",
        "shadow_url",
        "slice_fields",
        "split",
        "stable",
        "stable_metrics",
        "stable_url",
        "state",
        "sticky_cookie",
        "sticky_header",
        "sticky_json",
        "targets",
        "weight_bp",
    )

    def __init__(
        self,
        state: RouteState,
        sticky: StickyKey | None,
        slice_fields: tuple[SliceField, ...],
        tripped: bool,
        scores_field: str | None = None,
    ) -> None:
        self.state = state
        self.scores_field = scores_field  # where answers keep their scores; None: usual names
        self.model = state.model
        self.salt = state.salt
        self.rollout_id = state.rollout_id
        urls = state.urls
        self.stable = state.stable
        self.stable_url = urls[state.stable].rstrip("/")
        self.stable_metrics = role_metrics(state.model, state.stable, "stable")
        # role -> (version, base URL, metrics) of every role this route can send a user to
        self.targets: dict[str, tuple[str, str, RoleMetrics]] = {
            "stable": (self.stable, self.stable_url, self.stable_metrics)
        }
        self.canary = state.canary
        self.canary_url: str | None = None
        self.canary_metrics: RoleMetrics | None = None
        self.weight_bp = 0
        if state.canary is not None and state.canary in urls and not tripped:
            self.canary_url = urls[state.canary].rstrip("/")
            self.canary_metrics = role_metrics(state.model, state.canary, "canary")
            self.weight_bp = state.canary_weight_bp
            self.targets["canary"] = (state.canary, self.canary_url, self.canary_metrics)
        # Paired canary: the stable version also answers a copy of each canary request
        # (off the request path, logged as role "paired"); off with the canary itself.
        self.paired = bool(state.paired) and self.weight_bp > 0
        self.paired_metrics: RoleMetrics | None = (
            role_metrics(state.model, state.stable, "paired") if self.paired else None
        )
        self.shadow = state.shadow
        self.shadow_url: str | None = None
        self.shadow_metrics: RoleMetrics | None = None
        self.mirror_bp = 0
        if state.shadow is not None and state.shadow in urls and state.mirror_bp > 0:
            self.shadow_url = urls[state.shadow].rstrip("/")
            self.shadow_metrics = role_metrics(state.model, state.shadow, "shadow")
            self.mirror_bp = state.mirror_bp
        # The baseline: a fresh instance of the stable version, logged as role "baseline".
        # It serves the top `baseline_bp` buckets and, while the shadow is mirrored, gets the
        # same sampled copies. A canary tripped by the guard leaves it alone: it runs the
        # production version, and the controller clears it when it rolls back.
        self.baseline_url: str | None = None
        self.baseline_metrics: RoleMetrics | None = None
        self.baseline_bp = 0
        if state.baseline_url:
            self.baseline_url = state.baseline_url.rstrip("/")
            self.baseline_metrics = role_metrics(state.model, state.stable, "baseline")
            self.baseline_bp = state.baseline_bp
            self.targets["baseline"] = (self.stable, self.baseline_url, self.baseline_metrics)
        # one test on the request path decides whether there is any split to compute
        self.split = self.weight_bp > 0 or self.baseline_bp > 0
        self.sticky_header = sticky.header if sticky else None
        self.sticky_cookie = sticky.cookie if sticky else None
        self.sticky_json = sticky.json_field if sticky else None
        self.slice_fields = slice_fields
        self.needs_json = reads_json_body(sticky, slice_fields)


class RouteTable:
    def __init__(
        self, repository: RouteRepository, config: CoalmineConfig, guard: FastGuard
    ) -> None:
        self.repository = repository
        self.guard = guard
        self.poll_s = config.gateway.routing_poll_s
        self._models = {m.name: m for m in config.models}
        self.routes: dict[str, CompiledRoute] = {}
        self.loaded = False
        self._lock = threading.Lock()  # compile+swap from the poller vs. a trip on the loop
        self._stop = threading.Event()
        self._wake = threading.Event()  # a NOTIFY arrived: reload before the next poll
        self._thread: threading.Thread | None = None
        self.listener: RouteListener | None = None
        if supports_notify(repository.engine):
            self.listener = RouteListener(repository.engine, self._wake.set)

    def _compile(self, state: RouteState) -> CompiledRoute | None:
        if state.stable not in state.urls:
            log.error(
                "route of %s names stable %r with no URL; not served", state.model, state.stable
            )
            return None
        model = self._models.get(state.model)
        # a model registered through the API but absent from this config keeps the defaults
        sticky = model.routing.sticky if model else DEFAULT_STICKY
        slices = tuple(model.slices) if model else ()
        scores = model.scores if model else None
        return CompiledRoute(state, sticky, slices, self.guard.is_tripped(state), scores)

    def refresh(self) -> None:
        """Load every route from the store and swap in the compiled table."""
        states = self.repository.load_all()
        with self._lock:
            # compiling is cheap (a few routes, twice a second): always rebuild, so a guard
            # trip's lifecycle sees every new view of the store
            new: dict[str, CompiledRoute] = {}
            for name, state in states.items():
                compiled = self._compile(state)
                if compiled is not None:
                    new[name] = compiled
            self.routes = new
            self.loaded = True

    def trip(self, model: str) -> None:
        """Take the canary of `model` out of this process's table now (the guard has tripped)."""
        with self._lock:
            old = self.routes.get(model)
            if old is None:
                return
            compiled = self._compile(old.state)
            if compiled is not None:
                self.routes = {**self.routes, model: compiled}

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll_s)  # a notification, or the poll interval passed
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:
                # a locked or briefly unreachable store must not stop routing: keep the last
                # table and try again at the next poll
                log.exception("route refresh failed; keeping the previous table")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coalmine-routes", daemon=True)
        self._thread.start()
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
