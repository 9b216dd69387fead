"""The judge endpoints as one sub-application, mounted by the control API at /api/v1/judge.

Mounted rather than included so it has its own authentication: the control API's token
or the read-only judge token (auth.py). Errors are the control API's shape:
`{"error": ..., "errors": [{"field", "reason"}]}` with 404 (unknown model) and 422 (an
invalid field, named).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from coalmine.api.openapi import install_error_bodies
from coalmine.config import ConfigError
from coalmine.integrations import metrics
from coalmine.integrations.argo import argo_router
from coalmine.integrations.auth import JudgeAuth
from coalmine.integrations.flagger import flagger_router
from coalmine.integrations.service import JudgeService, UnknownModel
from coalmine.store.routes import RouteRepository

__all__ = ["JUDGE_PREFIX", "judge_app"]

JUDGE_PREFIX = "/api/v1/judge"


def judge_app(
    engine: Engine,
    *,
    token: str,
    judge_token: str | None = None,
    tasks: Mapping[str, str] | None = None,
) -> FastAPI:
    auth = JudgeAuth(token, judge_token)
    routes = RouteRepository(engine)
    service = JudgeService(engine, models=lambda: set(routes.load_all()), tasks=tasks)
    metrics.register(service)

    def baseline_of(model: str) -> str | None:
        route = routes.get(model)
        if route is None:
            raise UnknownModel(f"unknown model {model!r}")
        return route.stable

    app = FastAPI(
        title="Coalmine judge endpoints", version="1", openapi_url=None, docs_url=None,
        redoc_url=None,
    )  # fmt: skip
    install_error_bodies(app)
    # Argo's routes authenticate by header; Flagger's by metadata.token, checked in the route
    app.include_router(argo_router(service, baseline_of), dependencies=[Depends(auth.header)])
    app.include_router(flagger_router(service, auth))

    @app.get("/metrics", response_class=Response, dependencies=[Depends(auth.header)])
    def judge_metrics() -> Response:
        """`coalmine_judgement` alone (metrics.py), for a Prometheus scraping with this token."""
        return Response(generate_latest(metrics.JUDGE_REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(auth.header)])
    def openapi() -> dict[str, Any]:
        return get_openapi(title=app.title, version=app.version, routes=app.routes)

    @app.exception_handler(UnknownModel)
    async def _unknown(_: Request, exc: UnknownModel) -> Response:
        return JSONResponse({"error": str(exc.args[0])}, status_code=404)

    @app.exception_handler(ConfigError)
    async def _invalid(_: Request, exc: ConfigError) -> Response:
        errors = [{"field": f, "reason": r} for f, r in exc.errors]
        return JSONResponse(
            {"error": f"invalid request: {len(errors)} error(s)", "errors": errors},
            status_code=422,
        )

    return app
