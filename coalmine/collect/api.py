"""The batch ingest endpoint: `POST /api/v1/predictions` with `{"items": [...]}`.

For services that route in their own code: they report each call (request id, model,
version, latency, status, the answer) and Coalmine writes the rows its gateway would have
written. Authenticated like the rest of the control API (the app's bearer token); bodies
are bounded by `api.max_body_bytes` (413) and batches by `MAX_ITEMS` items (422). Every
item is checked before any is written: one bad item refuses the batch, with the item and
field named (`items.3.version`), so a reporter fixes and resends it whole. Writing is
idempotent on (model, request id, role): a batch retried after a lost answer is counted
once. A 200 means the rows are in the store. An item may carry the request's `headers`
and `body` instead of `slices` and `input`: the slices the model's config names and the
input are then read from them here, as the gateway reads them (the logging sidecar does).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import Engine

from coalmine.api.openapi import AUTH, BODY, NOT_FOUND
from coalmine.collect.items import IngestBatch, ItemError, from_request, resolve_role, to_record
from coalmine.collect.store import insert_new
from coalmine.config import CoalmineConfig, LoggingConfig, ModelConfig
from coalmine.log.policy import InputPolicy
from coalmine.log.record import PredictionRecord
from coalmine.store.routes import RouteRepository

__all__ = ["IngestResult", "ingest_router", "install_collectors"]


class IngestResult(BaseModel):
    written: int
    duplicates: int  # items whose (model, request id, role) the log already held


def _refuse(errors: list[ItemError]) -> Response:
    return JSONResponse(
        {
            "error": f"{len(errors)} invalid item(s); nothing was written",
            "errors": [{"field": e.field, "reason": e.reason} for e in errors],
        },
        status_code=422,
    )


def ingest_router(
    engine: Engine,
    policy: InputPolicy,
    *,
    prefix: str = "/api/v1",
    models: Mapping[str, ModelConfig] | None = None,
) -> APIRouter:
    """The ingest routes over `engine`; `policy` shapes reported inputs as the gateway's
    logging policy does (full, redacted, hashed or none); `models` (the config's) say
    which slices an item's request headers and body give."""
    router = APIRouter(prefix=prefix, tags=["collect"], responses=AUTH)
    routes = RouteRepository(engine)
    configs = dict(models or {})

    @router.post("/predictions", responses=BODY, response_model=IngestResult)
    def ingest(batch: IngestBatch) -> Any:
        """Log calls made without the gateway: one row per item, like the gateway's own."""
        live = routes.load_all()
        now = time.time()
        errors: list[ItemError] = []
        records: list[PredictionRecord] = []
        for i, item in enumerate(batch.items):
            where = f"items.{i}"
            try:
                route = live.get(item.model)
                if route is None:
                    raise ItemError(f"{where}.model", f"unknown model {item.model!r}")
                if item.version not in route.urls:
                    known = ", ".join(sorted(route.urls))
                    raise ItemError(
                        f"{where}.version",
                        f"{item.version!r} is not a version of {item.model!r} (known: {known})",
                    )
                role = resolve_role(item.version, item.role, route, where)
                slices, shaped = from_request(item, configs.get(item.model), policy, where)
                records.append(to_record(item, route, role, shaped, now, slices))
            except ItemError as exc:
                errors.append(exc)
        if errors:
            return _refuse(errors[:50])
        done = insert_new(engine, records)
        return IngestResult(written=done.written, duplicates=done.duplicates)

    @router.get("/routes/{model}", responses=NOT_FOUND)
    def live_route(model: str) -> Any:
        """What an in-process router needs to split as the gateway does (coalmine.Router):
        versions, weights in basis points and the rollout's bucketing salt; and what a
        reporter should send with each item for the log to read slices and input from it
        (`slice_headers`: the headers the model's slices name; `wants_body`)."""
        route = routes.get(model)
        if route is None:
            return JSONResponse({"error": f"unknown model {model!r}"}, status_code=404)
        config = configs.get(model)
        fields = config.slices if config is not None else []
        return {
            "model": route.model,
            "stable": route.stable,
            "canary": route.canary,
            "canary_weight_bp": route.canary_weight_bp,
            "shadow": route.shadow,
            "mirror_bp": route.mirror_bp,
            "salt": route.salt,
            "rollout_id": route.rollout_id,
            "revision": route.revision,
            "urls": dict(route.urls),
            "slice_headers": [f.header for f in fields if f.header],
            "wants_body": policy.mode != "none" or any(f.json_field for f in fields),
        }

    return router


def install_collectors(app: FastAPI, engine: Engine, config: CoalmineConfig | None) -> None:
    """The batch ingest routes (behind the app's token) and, when `collect.kserve` has a
    secret, the KServe logger endpoint at /collect/kserve/<secret> (see kserve_http)."""
    policy = InputPolicy(config.logging if config is not None else LoggingConfig())
    models = {m.name: m for m in config.models} if config is not None else {}
    app.include_router(ingest_router(engine, policy, models=models))
    if config is None:
        return
    secret = config.collect.kserve.resolved_secret()
    if secret is not None:
        from coalmine.collect.kserve import KServeCollector
        from coalmine.collect.kserve_http import kserve_app

        models = {m.name: m for m in config.models}
        collector = KServeCollector(engine, config.collect.kserve, models, policy)
        app.mount("/collect/kserve", kserve_app(collector, secret))
    nginx = config.collect.nginx_log
    if nginx.file is not None or nginx.syslog is not None:
        from coalmine.collect.nginx_log import AccessLogCollector, FileTail, SyslogListener

        sources: list[Any] = []
        if nginx.file is not None:
            sources.append(FileTail(nginx.file, from_start=nginx.from_start))
        if nginx.syslog is not None:
            host, port = nginx.syslog.rsplit(":", 1)
            sources.append(SyslogListener(host.strip("[]"), int(port)))
        # a daemon thread beside the API (its rows are written every poll, so a stop loses
        # at most the last fraction of a second); app.state keeps it for close()
        app.state.nginx_log = AccessLogCollector(engine, sources).start()
