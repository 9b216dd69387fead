"""The dashboard at `/ui` of the control API, and its read-only JSON under `/api/v1/ui`.

How reading works: the HTML pages and static files under `/ui` carry no data and need no
token. The page asks for the control API's bearer token, keeps it in sessionStorage, and
fetches its data from `/api/v1/ui/...` with `Authorization: Bearer <token>` — the same auth
as every other control route (401 without a token, 403 with a wrong one). The buttons POST
to the controller's own routes, `/api/v1/rollouts/{id}/{pause|resume|promote|abort}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine, select

from coalmine.api.auth import BearerAuth
from coalmine.api.params import RolloutId
from coalmine.store.schema import rollouts as rollouts_table
from coalmine.ui.render import environment, plotly_js, static_text, story_json
from coalmine.ui.report import render_report
from coalmine.ui.snapshots import to_json
from coalmine.ui.story import RolloutNotFound, list_models, list_rollouts, load_story

__all__ = ["CACHE_S", "STATIC", "install_ui", "ui_data_router", "ui_pages"]

STATIC = {
    "style.css": "text/css; charset=utf-8",
    "render.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
}


CACHE_S = 1.0

# in the OpenAPI document, as every answer of the API is (tests/fuzz checks it)
_NO_SUCH_ROLLOUT: dict[int | str, dict[str, Any]] = {404: {"description": "no such rollout"}}


def ui_pages(*, base_path: str = "") -> FastAPI:
    """The pages and static files, to mount at `/ui`. They hold no data, so they need no
    token: a browser navigation cannot send a bearer header. A mounted app sits outside the
    control API's app-wide auth dependency."""
    pages = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    env = environment()

    def page(name: str, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(base=base_path, inline=False, story=None, **context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @pages.get("/")
    def index() -> HTMLResponse:
        return page("index.html")

    @pages.get("/rollouts/{rollout_id}")
    def rollout_page(rollout_id: int) -> HTMLResponse:
        return page("rollout.html", rollout_id=rollout_id)

    @pages.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        text = plotly_js() if name == "plotly.min.js" else static_text(name)
        # plotly.js is 4 MB and changes only with the installed package: let browsers keep it
        cache = "public, max-age=86400" if name == "plotly.min.js" else "no-cache"
        return Response(text, media_type=STATIC[name], headers={"Cache-Control": cache})

    return pages


def ui_data_router(
    engine: Engine | Callable[[], Engine], token: str | None = None, *, base_path: str = ""
) -> APIRouter:
    """Read-only JSON for the pages under `/api/v1/ui`. Inside the control API the app's own
    auth covers it; given a `token` it checks the bearer token itself too (standalone use)."""
    get_engine: Callable[[], Engine] = engine if callable(engine) else (lambda: engine)
    deps = [Depends(BearerAuth(token))] if token else []
    data = APIRouter(prefix="/api/v1/ui", dependencies=deps, tags=["dashboard"])
    env = environment()

    @data.get("/overview")
    def overview() -> Response:
        """Models with their live split, and the newest rollouts, as HTML sections."""
        eng = get_engine()
        now = time.time()
        module = env.get_template("_overview.html").make_module({"base": base_path})
        models = list_models(eng)
        rollouts = list_rollouts(eng)
        body = {
            "sections": {
                "models": str(getattr(module, "models")(models)),  # noqa: B009
                "rollouts": str(getattr(module, "rollouts")(rollouts, now)),  # noqa: B009
            },
            "models": models,
            "rollouts": rollouts,
            "generated_at": now,
        }
        return Response(to_json(body), media_type="application/json")

    def story_or_404(rollout_id: int) -> Any:
        try:
            return load_story(get_engine(), rollout_id)
        except RolloutNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    # Several open tabs share one computation: a fresh one at most every CACHE_S seconds,
    # or at once when the rollout changed (every transition bumps its version).
    cache: dict[int, tuple[float, int, str]] = {}

    @data.get("/rollouts/{rollout_id}", responses=_NO_SUCH_ROLLOUT)
    def rollout_data(rollout_id: RolloutId) -> Response:
        """One rollout's sections (HTML) and figures (plotly JSON), for the live page."""
        hit = cache.get(rollout_id)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            with get_engine().connect() as conn:
                version = conn.execute(
                    select(rollouts_table.c.version).where(rollouts_table.c.id == rollout_id)
                ).scalar()
            if version == hit[1]:
                return Response(hit[2], media_type="application/json")
        started = time.monotonic()
        story = story_or_404(rollout_id)
        body = story_json(
            story,
            awaiting_approval=story.awaiting_approval,
            compute_s=time.monotonic() - started,
        )
        if len(cache) > 64:
            cache.clear()
        cache[rollout_id] = (time.monotonic(), int(story.rollout["version"]), body)
        return Response(body, media_type="application/json")

    @data.get("/rollouts/{rollout_id}/report", responses=_NO_SUCH_ROLLOUT)
    def rollout_report(rollout_id: RolloutId) -> HTMLResponse:
        """The self-contained HTML report, as `coalmine report` writes it."""
        html = render_report(story_or_404(rollout_id))
        disposition = f'attachment; filename="coalmine-rollout-{rollout_id}.html"'
        return HTMLResponse(html, headers={"Content-Disposition": disposition})

    return data


def install_ui(app: FastAPI, engine: Engine | Callable[[], Engine], *, token: str) -> None:
    """Add the dashboard to the control API app: pages at `/ui`, data at `/api/v1/ui`."""
    app.mount("/ui", ui_pages(), name="ui")
    app.include_router(ui_data_router(engine, token))
