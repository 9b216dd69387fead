"""A logging sidecar: beside one model server, it passes calls through and reports them.

Where another layer routes (nginx, a mesh) and the model server cannot report its own
predictions, run this in front of each version's server and register the sidecar's address
as the version's URL. It forwards every request to its one upstream (fixed at start:
nothing a request holds chooses where it goes), returns the answer as it came with
`X-Model-Version`, and reports each inference call through the batch ingest in the
background (`Reporter`): request id (`X-Request-Id`, which the nginx provider's file sets
on both the routed call and its mirror), version, latency, status, and the prediction and
scores read with the gateway's protocol parsers. The role is stamped at call time: "shadow"
for a copy nginx's mirror marks with `X-Coalmine-Shadow: 1`, else `--role` when given (a
baseline instance), else the version's role in the live route, which the sidecar reads
from the control API every `refresh_s` (a call of a version the route no longer names is
not reported, and counted). Nothing the reporting does can delay or fail the answer.

Slices and input are read where the config is, by the ingest, as the gateway reads them:
each item carries the request's headers that the model's slices name and its body (the
live route says which headers, and whether the log wants the body). A body larger than
`max_report_body` is not sent (the row is, without input or JSON slices; counted in
`oversized`), so one large request neither costs its row nor gets a batch refused; nor is
one while the reporter's queue holds `max_held_bodies` bytes of bodies already (the API is
away or slow: counted in `held_back`), so memory stays bounded, not just the item count.

    python -m coalmine.collect.sidecar --listen 127.0.0.1:9101 --upstream http://127.0.0.1:9001 \\
        --model iris --version v1 --api http://127.0.0.1:8900    # token: $COALMINE_TOKEN
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from coalmine.binary_tensors import HEADER_LENGTH
from coalmine.collect.reporter import Reporter
from coalmine.gateway.protocols import V2, match_inference_path, parse_response
from coalmine.gateway.upstream.base import HOP_BY_HOP, RESPONSE_NOT_FORWARDED, end_to_end

__all__ = ["Sidecar", "main"]

MAX_BODY = 32 << 20
# bodies reported with their calls, at most: with JSON's escaping (6x at worst) a single
# item stays under the API's default 1 MiB bound, and the reporter halves a larger batch
MAX_REPORT_BODY = 64 << 10
MAX_HELD_BODIES = 64 << 20  # bytes of bodies waiting in the reporter's queue, at most
_ID = 128


class Sidecar:
    def __init__(
        self,
        upstream: str,
        model: str,
        version: str,
        reporter: Reporter,
        *,
        timeout_s: float = 30.0,
        scores_field: str | None = None,
        role: str | None = None,
        refresh_s: float = 0.5,
        max_report_body: int = MAX_REPORT_BODY,
        max_held_bodies: int = MAX_HELD_BODIES,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.model = model
        self.version = version
        self.reporter = reporter
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.scores_field = scores_field
        self.role = role
        self.refresh_s = refresh_s
        self.route: dict[str, Any] | None = None
        self.unrouted = 0  # calls not reported: the route named no role for this version
        self.max_report_body = max_report_body
        self.oversized = 0  # calls reported without their body: larger than max_report_body
        self.max_held_bodies = max_held_bodies
        self.held_back = 0  # ... or the queue held max_held_bodies bytes of bodies already
        # from the live route: what the ingest reads slices and input from (until the first
        # answer: the body, no headers)
        self.slice_headers: tuple[str, ...] = ()
        self.wants_body = True
        self.session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, _: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=False)
        self._refresher = asyncio.create_task(self._refresh())

    async def stop(self, _: web.Application) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.session is not None:
            await self.session.close()
        await asyncio.to_thread(self.reporter.close)

    async def _refresh(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the API is away: keep the last route
                route = await asyncio.to_thread(self.reporter.client.route, self.model)
                headers = route.get("slice_headers") or []  # absent from an older API
                self.slice_headers = tuple(h for h in headers if isinstance(h, str))
                self.wants_body = route.get("wants_body", True) is not False
                self.route = route
            await asyncio.sleep(self.refresh_s)

    def _role_now(self, request: web.Request) -> str | None:
        if request.headers.get("X-Coalmine-Shadow") == "1":
            return "shadow"
        if self.role is not None:
            return self.role
        route = self.route or {}
        for role in ("canary", "stable"):
            if route.get(role) == self.version:
                return role
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        body = await request.read()
        inference = match_inference_path(request.raw_path) if request.method == "POST" else None
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        headers = end_to_end(request.headers.items(), HOP_BY_HOP)
        ts, start = time.time(), time.perf_counter()
        try:
            async with self.session.request(
                request.method, self.upstream + request.raw_path, data=body,
                headers=CIMultiDict(headers),
            ) as answer:  # fmt: skip
                content = await answer.read()
                status, answer_headers = answer.status, list(answer.headers.items())
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
            if inference is not None:
                self._report(request, body, request_id, ts, start, 0, kind, None)
            return web.json_response(
                {"error": f"upstream {self.version} {kind}"},
                status=504 if kind == "timeout" else 502,
            )
        if inference is not None and inference[1] == self.model:
            protocol = inference[0]
            length = dict(answer_headers).get(HEADER_LENGTH) if protocol is V2 else None
            answer_of = parse_response(protocol, content, status, length, self.scores_field)
            error = "http_5xx" if status >= 500 else "http_4xx" if status >= 400 else None
            self._report(request, body, request_id, ts, start, status, error, answer_of)
        out = CIMultiDict(end_to_end(answer_headers, RESPONSE_NOT_FORWARDED))
        out["X-Model-Version"] = self.version
        return web.Response(body=content, status=status, headers=out)

    def _report(
        self, request: web.Request, body: bytes, request_id: str, ts: float, start: float,
        status: int, error_class: str | None, answer: tuple[Any, Any] | None,
    ) -> None:  # fmt: skip
        item: dict[str, Any] = {
            "request_id": request_id[:_ID], "model": self.model, "version": self.version,
            "ts": ts, "latency_ms": (time.perf_counter() - start) * 1000.0, "status": status,
        }  # fmt: skip
        role = self._role_now(request)
        if role is None:
            self.unrouted += 1
            return
        item["role"] = role
        if error_class is not None:
            item["error_class"] = error_class
        if answer is not None:
            item["prediction"], item["scores"] = answer
        # always sent, even empty: it asks the ingest for the model's slices (None if absent)
        item["headers"] = {
            name: value for name in self.slice_headers
            if (value := request.headers.get(name)) is not None
        }  # fmt: skip
        size = 0
        if self.wants_body:
            if len(body) > self.max_report_body:
                self.oversized += 1
            elif self.reporter.held_bytes + len(body) > self.max_held_bodies:
                self.held_back += 1
            else:
                size = len(body)
                try:
                    item["body"] = body.decode()
                except UnicodeDecodeError:  # bytes the ingest shapes as the gateway would
                    item["body"] = base64.b64encode(body).decode()
                    item["body_encoding"] = "base64"
        self.reporter.add(item, size)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app


def main(argv: list[str] | None = None) -> None:
    from coalmine.client import Client

    parser = argparse.ArgumentParser(prog="python -m coalmine.collect.sidecar")
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    parser.add_argument("--upstream", required=True, help="the model server's base URL")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--api", required=True, help="the control API's base URL")
    parser.add_argument("--scores", default=None, help="the answer's scores field/output")
    parser.add_argument("--flush-s", type=float, default=0.5)
    parser.add_argument(
        "--max-report-body",
        type=int,
        default=MAX_REPORT_BODY,
        help="larger request bodies are reported without their input",
    )
    parser.add_argument(
        "--role",
        default=None,
        choices=["stable", "canary", "baseline"],
        help="a fixed role (a baseline instance); default: the live route's",
    )
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    client = Client(args.api, os.environ.get("COALMINE_TOKEN"))
    reporter = Reporter(client, flush_s=args.flush_s)
    sidecar = Sidecar(args.upstream, args.model, args.version, reporter,
                      scores_field=args.scores, role=args.role,
                      max_report_body=args.max_report_body)  # fmt: skip

    def announce(_: Any) -> None:
        print(f"coalmine sidecar listening on http://{host}:{port}", flush=True)

    web.run_app(sidecar.app(), host=host, port=int(port), print=announce, access_log=None)


if __name__ == "__main__":
    main()
