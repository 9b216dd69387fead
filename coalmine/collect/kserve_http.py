"""The KServe collector's HTTP endpoint: `POST /collect/kserve/<secret>`.

KServe's logger cannot send a bearer token (its worker sends plain CloudEvents, with a CA
for https at most), so this endpoint is not behind the control API's token: the URL path
carries a shared secret instead (`collect.kserve.secret` or $COALMINE_KSERVE_SECRET, at
least 16 characters), compared in constant time; any other path is a 404 that does not
say whether the collector is on. Put it in the logger's URL only (a Secret-backed value
in the InferenceService), serve the API over https (`api.tls_*`) so the path is not seen
on the wire, and allow only the model pods to reach the port (a NetworkPolicy). The secret
is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coalmine.collect.kserve import KServeCollector

__all__ = ["MIN_SECRET", "kserve_app"]

MIN_SECRET = 16


def kserve_app(collector: KServeCollector, secret: str) -> Starlette:
    """The endpoint as an ASGI app, to mount at /collect/kserve."""
    if len(secret) < MIN_SECRET:
        raise ValueError(f"the KServe collector's secret needs {MIN_SECRET}+ characters")
    digest = hashlib.sha256(secret.encode()).digest()

    async def receive(request: Request) -> JSONResponse:
        given = hashlib.sha256(request.path_params["secret"].encode()).digest()
        if not hmac.compare_digest(given, digest):
            return JSONResponse({"error": "not found"}, status_code=404)
        body = await request.body()
        answer = await asyncio.to_thread(collector.handle, request.headers, body, time.time())
        return JSONResponse(answer.body, status_code=answer.status)

    return Starlette(routes=[Route("/{secret}", receive, methods=["POST"])])
