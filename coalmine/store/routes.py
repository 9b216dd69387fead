"""The live routing table: model versions, each model's split, and fast-guard trips.

The store is the live truth once a gateway has started: the config only seeds models the
store has never seen. The gateway polls `load_all()` (two small SELECTs); the controller
changes routes with `set_route_in(conn, ...)` inside its own transaction so a rollout's state
transition and its traffic change commit together. On PostgreSQL every write here also sends
a NOTIFY in that transaction (`route_events`), so gateway replicas reload at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from coalmine.config import CoalmineConfig, ModelConfig
from coalmine.routing.state import RouteState, percent_to_bp
from coalmine.store.route_events import notify_in
from coalmine.store.schema import guard_trips, model_versions, routes

__all__ = [
    "ROUTE_FIELDS",
    "GuardTrip",
    "RouteError",
    "RouteRepository",
    "configured_route",
    "get_route_in",
    "route_drift",
    "set_route_in",
    "upsert_version_in",
]

# The columns a caller may change; model, salt, revision and updated_at are managed here.
ROUTE_FIELDS = frozenset(
    {
        "stable", "canary", "canary_weight_bp", "shadow", "mirror_bp", "rollout_id",
        "guard_failures", "baseline_url", "baseline_bp", "paired",
    }
)  # fmt: skip
_VERSION_FIELDS = ("stable", "canary", "shadow")


log = logging.getLogger(__name__)

# The route columns the config file's `routing:` block sets (besides the versions' URLs).
_CONFIGURED = ("stable", "canary", "canary_weight_bp", "shadow", "mirror_bp", "salt")


class RouteError(ValueError):
    """A route change that names an unknown model, version or field."""


@dataclass(frozen=True, slots=True)
class GuardTrip:
    id: int
    model: str
    version: str
    rollout_id: int | None
    ts: float
    reason: str


def _state(row: Any, urls: dict[str, str]) -> RouteState:
    return RouteState(
        model=row.model,
        stable=row.stable,
        canary=row.canary,
        canary_weight_bp=row.canary_weight_bp,
        shadow=row.shadow,
        mirror_bp=row.mirror_bp,
        salt=row.salt,
        rollout_id=row.rollout_id,
        revision=row.revision,
        urls=urls,
        guard_failures=row.guard_failures,
        baseline_url=row.baseline_url,
        baseline_bp=row.baseline_bp,
        paired=bool(row.paired),
    )


def _versions_in(conn: Connection, model: str) -> dict[str, str]:
    stmt = select(model_versions.c.version, model_versions.c.url).where(
        model_versions.c.model == model
    )
    return {r.version: r.url for r in conn.execute(stmt)}


def _dialect_insert(conn: Connection, table: Any) -> Any:
    """An INSERT with ON CONFLICT support where the dialect has it (SQLite, PostgreSQL)."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    return None


def upsert_version_in(conn: Connection, model: str, version: str, url: str) -> None:
    """Insert or update one version's base URL (conflict-safe across processes)."""
    values = {"model": model, "version": version, "url": url, "created_at": time.time()}
    notify_in(conn, model)
    stmt = _dialect_insert(conn, model_versions)
    if stmt is not None:
        conn.execute(
            stmt.values(**values).on_conflict_do_update(
                index_elements=["model", "version"], set_={"url": url}
            )
        )
        return
    key = (model_versions.c.model == model) & (model_versions.c.version == version)
    if conn.execute(update(model_versions).where(key).values(url=url)).rowcount == 0:
        conn.execute(insert(model_versions).values(**values))


def _insert_route_if_absent(conn: Connection, values: dict[str, Any]) -> None:
    notify_in(conn, values["model"])
    stmt = _dialect_insert(conn, routes)
    if stmt is not None:
        conn.execute(stmt.values(**values).on_conflict_do_nothing(index_elements=["model"]))
        return
    exists = conn.execute(select(routes.c.model).where(routes.c.model == values["model"]))
    if exists.first() is None:
        conn.execute(insert(routes).values(**values))


def get_route_in(conn: Connection, model: str, *, for_update: bool = False) -> RouteState | None:
    """The route of `model` read on `conn` (optionally row-locked on PostgreSQL)."""
    stmt = select(routes).where(routes.c.model == model)
    if for_update:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return None if row is None else _state(row, _versions_in(conn, model))


def set_route_in(conn: Connection, model: str, **changes: Any) -> RouteState:
    """Apply `changes` to the route of `model` on `conn`, bumping its revision.

    Runs inside the caller's transaction: nothing is committed here. Raises RouteError for
    an unknown model, field or version, and ValueError for a weight outside 0..10000.
    """
    unknown = set(changes) - ROUTE_FIELDS
    if unknown:
        raise RouteError(f"cannot change {sorted(unknown)}; allowed: {sorted(ROUTE_FIELDS)}")
    current = get_route_in(conn, model, for_update=True)
    if current is None:
        raise RouteError(f"unknown model {model!r}")
    for name in _VERSION_FIELDS:
        version = changes.get(name)
        if version is not None and version not in current.urls:
            raise RouteError(f"{name}: unknown version {version!r} of model {model!r}")
    row = {f: getattr(current, f) for f in ROUTE_FIELDS} | changes
    if row["stable"] is None:
        raise RouteError("stable cannot be empty")
    if row["canary"] is None and row["canary_weight_bp"] > 0:
        raise RouteError("canary_weight_bp > 0 needs a canary version")
    new = _state_from_values(current, row)  # validates the weights before writing
    now = time.time()
    conn.execute(
        update(routes)
        .where(routes.c.model == model)
        .values(**changes, revision=routes.c.revision + 1, updated_at=now)
    )
    notify_in(conn, model)
    return new


def _state_from_values(current: RouteState, row: dict[str, Any]) -> RouteState:
    return RouteState(
        model=current.model,
        stable=row["stable"],
        canary=row["canary"],
        canary_weight_bp=row["canary_weight_bp"],
        shadow=row["shadow"],
        mirror_bp=row["mirror_bp"],
        salt=current.salt,
        rollout_id=row["rollout_id"],
        revision=current.revision + 1,
        urls=current.urls,
        guard_failures=row["guard_failures"],
        baseline_url=row["baseline_url"],
        baseline_bp=row["baseline_bp"],
        paired=bool(row["paired"]),
    )


def configured_route(model: ModelConfig) -> dict[str, Any]:
    """The route columns the config file asks for `model` (what seeding writes)."""
    r = model.routing
    return {
        "stable": r.stable,
        "canary": r.canary,
        "canary_weight_bp": percent_to_bp(r.canary_weight),
        "shadow": r.shadow,
        # a mirror share without a shadow version would mean nothing
        "mirror_bp": percent_to_bp(r.mirror_share) if r.shadow else 0,
        "salt": r.salt or model.name,
    }


def route_drift(
    config: CoalmineConfig, live: Mapping[str, RouteState]
) -> dict[str, list[tuple[str, Any, Any]]]:
    """Per model the store knows, the (field, file value, store value) that differ (pure)."""
    drift: dict[str, list[tuple[str, Any, Any]]] = {}
    for model in config.models:
        state = live.get(model.name)
        if state is None:
            continue
        wanted = configured_route(model)
        changed = [
            (f, wanted[f], getattr(state, f)) for f in _CONFIGURED if wanted[f] != getattr(state, f)
        ]
        if changed:
            drift[model.name] = changed
    return drift


def describe_drift(model: str, changed: Iterable[tuple[str, Any, Any]]) -> str:
    fields = ", ".join(f"{f}: file {want!r}, store {have!r}" for f, want, have in changed)
    return (
        f"model {model}: the live routing in the store differs from the config file ({fields}); "
        f"the store's is in force (the file only seeds models the store has never seen). "
        f"`coalmine routes apply --config FILE {model}` applies the file's"
    )


class RouteRepository:
    """Reads and writes the live routes; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seed_from_config(self, config: CoalmineConfig) -> dict[str, list[tuple[str, Any, Any]]]:
        """Upsert every configured version; create a route only for models not yet stored.

        Returns (and logs as a warning) where the store's live routing of an already-known
        model differs from the file: a routing edit in the file is not applied silently.
        """
        now = time.time()
        with self.engine.begin() as conn:
            for model in config.models:
                for version in model.versions:
                    upsert_version_in(conn, model.name, version.name, version.base_url)
                _insert_route_if_absent(
                    conn,
                    {
                        "model": model.name,
                        **configured_route(model),
                        "revision": 1,
                        "updated_at": now,
                        "guard_failures": 0,
                        "baseline_bp": 0,
                        "paired": False,
                    },
                )
        drift = route_drift(config, self.load_all())
        for model_name, changed in drift.items():
            log.warning("%s", describe_drift(model_name, changed))
        return drift

    def apply_config(self, config: CoalmineConfig, models: Iterable[str]) -> list[RouteState]:
        """Overwrite the live routes of `models` with the config file's `routing:`.

        Refused (RouteError) for a model with an active rollout: the controller owns its
        split until the rollout ends.
        """
        applied = []
        with self.engine.begin() as conn:
            for name in models:
                try:
                    model = config.model(name)
                except KeyError:
                    raise RouteError(f"model {name!r} is not in the config file") from None
                for version in model.versions:
                    upsert_version_in(conn, model.name, version.name, version.base_url)
                current = get_route_in(conn, name, for_update=True)
                if current is None:
                    raise RouteError(f"model {name!r} has no route yet: start the gateway once")
                if current.rollout_id is not None:
                    raise RouteError(
                        f"model {name!r} has an active rollout #{current.rollout_id}: "
                        f"let it end or abort it first"
                    )
                conn.execute(
                    update(routes)
                    .where(routes.c.model == name)
                    .values(
                        **configured_route(model),
                        revision=routes.c.revision + 1,
                        updated_at=time.time(),
                    )
                )
                notify_in(conn, name)
                state = get_route_in(conn, name)
                assert state is not None
                applied.append(state)
        return applied

    def load_all(self) -> dict[str, RouteState]:
        """Every model's route with its version URLs: two SELECTs, cheap enough to poll."""
        with self.engine.connect() as conn:
            urls: dict[str, dict[str, str]] = {}
            for v in conn.execute(select(model_versions)):
                urls.setdefault(v.model, {})[v.version] = v.url
            return {
                row.model: _state(row, urls.get(row.model, {}))
                for row in conn.execute(select(routes))
            }

    def get(self, model: str) -> RouteState | None:
        with self.engine.connect() as conn:
            return get_route_in(conn, model)

    def set_route(self, model: str, **changes: Any) -> RouteState:
        """Change the route of `model` in one transaction; returns the new state."""
        with self.engine.begin() as conn:
            return set_route_in(conn, model, **changes)

    def add_version(self, model: str, version: str, url: str) -> None:
        """Register (or re-point) a version of `model` at base URL `url`."""
        with self.engine.begin() as conn:
            upsert_version_in(conn, model, version, url.rstrip("/"))

    def versions(self, model: str) -> dict[str, str]:
        """version -> base URL for `model`."""
        with self.engine.connect() as conn:
            return _versions_in(conn, model)

    def record_guard_trip(
        self, model: str, version: str, rollout_id: int | None, reason: str
    ) -> int:
        """Record a fast-guard trip and take the canary's weight to 0, atomically.

        The weight is only zeroed while `version` is still the canary, so a late trip from
        a gateway with a stale view cannot cut the traffic of a newer canary. Returns the
        trip's id.
        """
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(guard_trips).values(
                    model=model, version=version, rollout_id=rollout_id, ts=now, reason=reason
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # an INSERT always has one
            trip_id = key[0]
            conn.execute(
                update(routes)
                .where(
                    (routes.c.model == model)
                    & (routes.c.canary == version)
                    & (routes.c.canary_weight_bp != 0)
                )
                .values(canary_weight_bp=0, revision=routes.c.revision + 1, updated_at=now)
            )
            notify_in(conn, model)  # the other replicas stop sending to it at once
            return int(trip_id)

    def guard_trips_since(self, model: str, after_id: int = 0) -> list[GuardTrip]:
        """Trips of `model` with id > after_id, oldest first."""
        stmt = (
            select(guard_trips)
            .where((guard_trips.c.model == model) & (guard_trips.c.id > after_id))
            .order_by(guard_trips.c.id)
        )
        with self.engine.connect() as conn:
            return [
                GuardTrip(r.id, r.model, r.version, r.rollout_id, r.ts, r.reason)
                for r in conn.execute(stmt)
            ]
