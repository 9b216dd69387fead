"""The control API (FastAPI) under /api/v1: models, versions, routes and rollouts.

Every route, the OpenAPI document included, requires the bearer token. It runs on its own
port (`api.port`); the gateway's data-plane port serves none of it. Errors are JSON
`{"error": "...", "errors": [{"field", "reason"}]}` with 404 (unknown), 409 (conflicts with
the current state, e.g. a second active rollout) or 422 (invalid spec).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from coalmine.api.auth import BearerAuth
from coalmine.api.limits import BodyLimit
from coalmine.api.openapi import (
    AUTH,
    BODY,
    CONFLICT,
    NOT_FOUND,
    install_error_bodies,
)
from coalmine.api.params import After, RolloutId
from coalmine.collect.api import install_collectors
from coalmine.config import NAME_PATTERN, BaseUrl, CoalmineConfig, ConfigError
from coalmine.integrations.app import JUDGE_PREFIX, judge_app
from coalmine.rollout import machine
from coalmine.rollout.controller import Controller
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.machine import InvalidTransition, awaiting_approval
from coalmine.rollout.outbox import Outbox
from coalmine.rollout.planning import (
    observed_rates,
    observed_sources,
    plan_warnings,
    source_checks,
)
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import NotFound, RolloutConflict, RolloutRecord, RolloutRepository
from coalmine.routing.state import RouteState
from coalmine.store.routes import RouteError, RouteRepository
from coalmine.ui.web import install_ui

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


class StartRollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=NAME_PATTERN)
    candidate: str = Field(pattern=NAME_PATTERN, description="the candidate version's name")
    url: BaseUrl = Field(description="base URL of the candidate's model server")
    spec: dict[str, Any] | None = Field(default=None, description="a RolloutSpec; None = defaults")


class NewVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=NAME_PATTERN)
    url: BaseUrl


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


def _route_dict(route: RouteState) -> dict[str, Any]:
    return {
        "model": route.model,
        "stable": route.stable,
        "canary": route.canary,
        "canary_weight": route.canary_weight_bp / 100,
        "shadow": route.shadow,
        "mirror_share": route.mirror_bp / 100,
        "rollout_id": route.rollout_id,
        "revision": route.revision,
        "versions": dict(route.urls),
    }


def _rollout_dict(record: RolloutRecord) -> dict[str, Any]:
    out = record.to_dict()
    gate = awaiting_approval(record.state)
    out["awaiting_approval"] = record.state.spec.step_weights[gate] if gate is not None else None
    out["verdict"] = (record.last_judgement or {}).get("verdict")
    return out


def _error(status: int, message: str, errors: list[tuple[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if errors:
        body["errors"] = [{"field": f, "reason": r} for f, r in errors]
    return JSONResponse(body, status_code=status)


def create_app(
    engine: Engine,
    *,
    token: str,
    controller: Controller,
    tasks: dict[str, str] | None = None,
    resources: Callable[[str], bool] | None = None,
    max_body_bytes: int = 1 << 20,
    config: CoalmineConfig | None = None,
    judge_token: str | None = None,
) -> FastAPI:
    """The control API over `engine`; `controller` applies operators' commands.

    `resources(model)` says whether a CPU/memory source is configured for a model (None:
    none is): a rollout judging `cpu`/`memory` without one is refused. `config` (the
    file `coalmine serve` runs) sets the collectors: the logging policy reported inputs
    are shaped by, and the KServe logger endpoint. `judge_token`: a read-only token the
    judge endpoints (Argo Rollouts, Flagger) accept besides `token`.
    """
    auth = BearerAuth(token)
    app = FastAPI(
        title="Coalmine control API",
        version="1",
        openapi_url=None,  # served below, behind the token like everything else
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(auth)],
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # 413 before auth or a route
    routes = RouteRepository(engine)
    rollouts = RolloutRepository(engine)
    task_of = tasks or {}
    api = APIRouter(prefix=API_PREFIX, responses=AUTH)  # the OpenAPI document's errors
    install_error_bodies(app)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return _error(404, str(exc.args[0] if exc.args else exc))

    @app.exception_handler(RolloutConflict)
    async def _conflict(_: Request, exc: RolloutConflict) -> Response:
        return _error(409, str(exc))

    @app.exception_handler(InvalidTransition)
    async def _invalid(_: Request, exc: InvalidTransition) -> Response:
        return _error(409, str(exc))

    @app.exception_handler(ConfigError)
    async def _bad_spec(_: Request, exc: ConfigError) -> Response:
        return _error(422, f"invalid rollout spec: {len(exc.errors)} error(s)", exc.errors)

    @app.exception_handler(RouteError)
    async def _bad_route(_: Request, exc: RouteError) -> Response:
        return _error(422, str(exc))

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return get_openapi(title=app.title, version=app.version, routes=app.routes)

    @api.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics", tags=["meta"], response_class=Response)
    def metrics() -> Response:
        """The controller's Prometheus metrics (rollouts by outcome, phase, weight, step time)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/user-metrics", tags=["meta"])
    def list_user_metrics() -> list[dict[str, str]]:
        """The user metrics criteria may name (`user:<name>`): the config file's allow-list."""
        from coalmine.analysis.user_metrics import available

        return [{"metric": f"user:{n}", "function": f} for n, f in available().items()]

    # -- models, versions, routes -----------------------------------------------------------

    @api.get("/models", tags=["models"])
    def list_models() -> list[dict[str, Any]]:
        return [_route_dict(r) for r in routes.load_all().values()]

    @api.get("/models/{model}", tags=["models"], responses=NOT_FOUND)
    def get_model(model: str) -> dict[str, Any]:
        route = routes.get(model)
        if route is None:
            raise NotFound(f"unknown model {model!r}")
        out = _route_dict(route)
        active = rollouts.active_for(model)
        out["active_rollout"] = _rollout_dict(active) if active else None
        return out

    @api.get("/models/{model}/versions", tags=["models"], responses=NOT_FOUND)
    def list_versions(model: str) -> dict[str, str]:
        if routes.get(model) is None:
            raise NotFound(f"unknown model {model!r}")
        return routes.versions(model)

    @api.post(
        "/models/{model}/versions",
        tags=["models"],
        status_code=201,
        responses={**NOT_FOUND, **BODY},
    )
    def add_version(model: str, body: NewVersion) -> dict[str, str]:
        if routes.get(model) is None:
            raise NotFound(f"unknown model {model!r}")
        routes.add_version(model, body.version, str(body.url))
        return routes.versions(model)

    @api.get("/routes", tags=["models"])
    def list_routes() -> list[dict[str, Any]]:
        return [_route_dict(r) for r in routes.load_all().values()]

    @api.post("/models/{model}/rollback", tags=["models"], responses={**NOT_FOUND, **CONFLICT})
    async def rollback_model(model: str) -> dict[str, Any]:
        """Restore the stable version the last promotion replaced, at once."""
        return (await controller.rollback_model(model)).summary()

    # -- rollouts ---------------------------------------------------------------------------

    @api.post(
        "/rollouts",
        tags=["rollouts"],
        status_code=201,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
    )
    def start_rollout(body: StartRollout) -> dict[str, Any]:
        """Start a rollout (409 when the model already has an active one)."""
        try:
            spec = parse_spec(body.spec, "spec")
        except ConfigError as exc:
            raise ConfigError("spec", [(f"spec.{p}", r) for p, r in exc.errors]) from None
        task = task_of.get(body.model, "classification")
        errors: list[tuple[str, str]] = []
        criteria: dict[str, list[Any]] = {}
        for mode in ("shadow", "canary"):
            try:
                criteria[mode] = build_criteria(spec, mode, task)
            except ConfigError as exc:
                errors.extend((f"spec.{path}", reason) for path, reason in exc.errors)
        if errors:
            raise ConfigError("spec", errors)
        if routes.get(body.model) is None:
            raise NotFound(f"unknown model {body.model!r}")
        facts = observed_sources(
            engine, body.model, task=task, resources=bool(resources and resources(body.model))
        )
        refusals, warnings = source_checks(spec, criteria, facts)
        if refusals:
            raise ConfigError("spec", [(f"spec.{path}", reason) for path, reason in refusals])
        seen = observed_rates(engine, body.model)
        warnings += plan_warnings(
            spec, criteria["canary"], rps=seen.rps, label_rate=seen.label_rate, traffic=seen
        )
        record = rollouts.create(body.model, body.candidate, str(body.url), spec, notes=warnings)
        out = _rollout_dict(record)
        out["warnings"] = warnings
        return out

    @api.get("/rollouts", tags=["rollouts"])
    def list_rollouts(
        model: str | None = None,
        active: bool = False,
        limit: int = Query(default=50, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        records = rollouts.active() if active else rollouts.recent(model, limit)
        if active and model:
            records = [r for r in records if r.state.model == model]
        return [_rollout_dict(r) for r in records]

    @api.get("/rollouts/{rollout_id}", tags=["rollouts"], responses=NOT_FOUND)
    def get_rollout(rollout_id: RolloutId) -> dict[str, Any]:
        return _rollout_dict(rollouts.get(rollout_id))

    @api.get("/rollouts/{rollout_id}/events", tags=["rollouts"], responses=NOT_FOUND)
    def rollout_events(rollout_id: RolloutId, after: After = 0) -> list[dict[str, Any]]:
        rollouts.get(rollout_id)  # 404 for an unknown rollout
        return rollouts.events(rollout_id, after)

    @api.get("/rollouts/{rollout_id}/webhooks", tags=["rollouts"], responses=NOT_FOUND)
    def rollout_webhooks(rollout_id: RolloutId) -> list[dict[str, Any]]:
        """Webhook deliveries of a rollout: state, attempts, last error (secrets left out)."""
        rollouts.get(rollout_id)  # 404 for an unknown rollout
        return [
            {k: v for k, v in row.items() if k != "secret"}
            for row in Outbox(engine).rows(rollout_id)
        ]

    @api.get("/rollouts/{rollout_id}/judgement", tags=["rollouts"], responses=NOT_FOUND)
    def rollout_judgement(rollout_id: RolloutId) -> dict[str, Any]:
        record = rollouts.get(rollout_id)
        return {
            "rollout_id": rollout_id,
            "phase": record.state.phase.value,
            "judgement": record.last_judgement,
        }

    def _command(name: str, event_type: type[Any]) -> None:
        async def handler(rollout_id: RolloutId, body: Command | None = None) -> dict[str, Any]:
            event = event_type(body.reason) if body and body.reason else event_type()
            return _rollout_dict(await controller.command(rollout_id, event))

        handler.__name__ = f"{name}_rollout"
        handler.__doc__ = f"{name.capitalize()} a rollout (409 when its phase does not allow it)."
        api.add_api_route(
            f"/rollouts/{{rollout_id}}/{name}",
            handler,
            methods=["POST"],
            tags=["rollouts"],
            responses={**NOT_FOUND, **CONFLICT, **BODY},
        )

    for name, event_type in (
        ("pause", machine.Pause),
        ("resume", machine.Resume),
        ("promote", machine.Promote),
        ("abort", machine.Abort),
        ("approve", machine.Approve),
    ):
        _command(name, event_type)

    app.include_router(api)
    install_collectors(app, engine, config)  # batch ingest; KServe logger when configured
    # mounted, not included: the judge endpoints have their own auth (the read-only token too)
    app.mount(JUDGE_PREFIX, judge_app(engine, token=token, judge_token=judge_token, tasks=task_of))
    install_ui(app, engine, token=token)  # the dashboard: pages at /ui, data at /api/v1/ui
    return app
