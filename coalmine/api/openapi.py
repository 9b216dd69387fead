"""What the control API's OpenAPI document says about errors, and a 405 that agrees with it.

Every answer the API gives should be in its document (clients and fuzzers read it): the
error body is `ErrorBody`, and each route lists the errors it can answer: 401/403 (the
token) and 422 (invalid input, each field and why) everywhere, 404 where it names a model
or rollout, 409 where the current state may refuse it, 413 where it takes a body.

Starlette's 405 named the methods of the first route matching the path only (GET and POST
on one path are two routes), so its `Allow` header disagreed with the document; the handler
here names the methods the document lists for the path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "AUTH",
    "BODY",
    "CONFLICT",
    "NOT_FOUND",
    "ErrorBody",
    "FieldError",
    "allowed_methods",
    "document_methods",
    "install_error_bodies",
    "install_method_not_allowed",
    "validation_errors",
]


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every error the API itself answers: what went wrong and, for invalid input, where."""

    error: str
    errors: list[FieldError] | None = None


def _answer(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


Responses = dict[int | str, dict[str, Any]]

AUTH: Responses = {
    401: {"description": "no bearer token"},
    403: {"description": "a wrong bearer token"},
    # FastAPI documents its own {"detail": [...]} shape; the API answers ErrorBody
    422: _answer("invalid input: each field and the reason"),
}
NOT_FOUND: Responses = {404: _answer("no such model or rollout")}
CONFLICT: Responses = {409: _answer("refused in the current state (e.g. a second rollout)")}
BODY: Responses = {413: _answer("request body over the API's limit")}


def document_methods(document: dict[str, Any]) -> list[tuple[re.Pattern[str], list[str]]]:
    """(path pattern, its methods) for every path of an OpenAPI document."""
    out = []
    for template, operations in document.get("paths", {}).items():
        parts = re.split(r"(\{[^}/]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        out.append((re.compile(pattern), sorted(m.upper() for m in operations)))
    return out


def allowed_methods(table: list[tuple[re.Pattern[str], list[str]]], path: str) -> list[str]:
    """The methods the document lists for the paths `path` matches."""
    methods: set[str] = set()
    for pattern, listed in table:
        if pattern.fullmatch(path):
            methods.update(listed)
    return sorted(methods)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI's validation errors as ErrorBody's (field, reason) pairs; a body field is
    named by its path in the body, a query or path parameter as query.NAME / path.NAME."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc[:1] == ["body"] and len(loc) > 1:
            loc = loc[1:]
        out.append({"field": ".".join(loc) or "(body)", "reason": str(error.get("msg", ""))})
    return out


def install_error_bodies(app: FastAPI) -> None:
    """Invalid input answers ErrorBody (422), as the document says, not FastAPI's shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(exc.errors())
        return JSONResponse(
            {"error": f"invalid request: {len(errors)} error(s)", "errors": errors},
            status_code=422,
        )

    install_method_not_allowed(app)


def install_method_not_allowed(app: FastAPI) -> None:
    """Answer 405 with an ErrorBody and an `Allow` header naming the methods the OpenAPI
    document lists for the path (Starlette's own for a path the document leaves out)."""
    table: list[tuple[re.Pattern[str], list[str]]] = []

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        if not table:  # the routes are all in place by the first request
            table.extend(
                document_methods(
                    get_openapi(title=app.title, version=app.version, routes=app.routes)
                )
            )
        path = request.url.path
        allowed = allowed_methods(table, path) or (exc.headers or {}).get("Allow", "").split(", ")
        return JSONResponse(
            {"error": f"{request.method} not allowed on {path}; allowed: {', '.join(allowed)}"},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )
