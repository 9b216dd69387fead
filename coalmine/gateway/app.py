"""The gateway's aiohttp application: the data plane, and nothing that controls it.

Per inference request: resolve the model's compiled route, derive the sticky key, pick
stable, canary or baseline, queue mirror copies for the shadow (and the baseline), forward,
and hand one log record per upstream call to the prediction log's buffer. Nothing on this
path touches the database or blocks: route changes arrive through the table's poller thread,
and records are written in batches by the log writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from sqlalchemy import Engine

from coalmine.binary_tensors import HEADER_LENGTH, BinaryTensorError, decode_body, header_length
from coalmine.config import CoalmineConfig
from coalmine.gateway.guard import FastGuard
from coalmine.gateway.ids import new_request_id
from coalmine.gateway.metrics import (
    BASELINE_FAILOVERS,
    FAILOVERS,
    GUARD_TRIPS,
    REJECTED,
    exposition,
)
from coalmine.gateway.mirror import ShadowJob, ShadowMirror, mirror_headers
from coalmine.gateway.protocols import (
    MAX_LOGGED_TENSOR_BYTES,
    V2,
    Protocol,
    match_inference_path,
    match_model_route,
    parse_response,
)
from coalmine.gateway.table import CompiledRoute, RouteTable
from coalmine.gateway.upstream.base import (
    HOP_BY_HOP,
    RESPONSE_NOT_FORWARDED,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    end_to_end,
)
from coalmine.gateway.upstream.registry import make_client
from coalmine.log.feedback_http import FeedbackStore, make_feedback_handler
from coalmine.log.policy import (
    InputPolicy,
    JsonTooDeep,
    extract_slices,
    json_path,
    loads_bounded,
)
from coalmine.log.process_writer import ProcessWriter
from coalmine.log.record import PredictionRecord
from coalmine.log.throttle import ThrottledLog
from coalmine.log.writer import BatchWriter
from coalmine.routing.split import mirror_sampled
from coalmine.routing.split import route as pick_role
from coalmine.store.routes import RouteRepository

__all__ = ["Gateway", "build_app"]

log = logging.getLogger(__name__)
_throttled = ThrottledLog(log)  # lines any client can cause at will

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("coalmine_gateway")
_NO_SLICES: dict[str, Any] = {}
_NOT_PARSED = object()
MAX_REQUEST_ID = 128  # characters: the prediction log's column and the feedback API's limit
_NO_ANSWER = (None, None)  # (prediction, scores) of a call that got no response
# the gateway's own answer headers: an upstream's value of these is replaced, not repeated
_OWN_HEADERS = frozenset({"x-request-id", "x-model-version"})
_NOT_PASSED_BACK = RESPONSE_NOT_FORWARDED | _OWN_HEADERS


def _error(status: int, message: str, request_id: str | None = None) -> web.Response:
    headers = {"X-Request-ID": request_id} if request_id else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _not_allowed(message: str, allowed: list[str]) -> web.Response:
    response = _error(405, message)
    response.headers["Allow"] = ", ".join(allowed)  # a 405 must say what is (RFC 9110)
    return response


def _long_request_id() -> web.Response:
    # refused rather than cut: the id is echoed to the client, who sends it back with the
    # label, so the log must hold exactly what was echoed
    REJECTED.labels("request_id_too_long").inc()
    return _error(
        400,
        f"X-Request-ID: longer than {MAX_REQUEST_ID} characters (the most the prediction "
        "log and /v1/feedback keep)",
    )


async def _continue(request: web.BaseRequest) -> None:
    # aiohttp's router answers `Expect: 100-continue`; the low-level server leaves it to us,
    # and clients such as curl would otherwise wait a second before sending the body
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _binary_request(body: bytes, length: str) -> Any:
    """A binary-extension V2 request as JSON with its raw inputs decoded (for the log and
    JSON sticky keys and slices); None when it is malformed (the model server judges it)."""
    try:
        n = header_length(length)
        return None if n is None else decode_body(body, n, "inputs", MAX_LOGGED_TENSOR_BYTES)
    except (BinaryTensorError, RecursionError):  # a JSON header nested beyond reading
        return None


def _log_writer(config: CoalmineConfig, engine: Engine) -> BatchWriter | ProcessWriter:
    if config.logging.writer == "process" and engine.url.database not in (None, "", ":memory:"):
        return ProcessWriter(config.store.url, config.logging)
    return BatchWriter(engine, config.logging)  # (an in-memory store is this process's own)


def _error_class(status: int) -> str | None:
    if status >= 500:
        return "http_5xx"
    if status >= 400:
        return "http_4xx"
    return None


class Gateway:
    """The request path and its parts: route table, upstream client, mirror, log sink."""

    def __init__(
        self,
        config: CoalmineConfig,
        engine: Engine,
        *,
        client: UpstreamClient | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        gateway = config.gateway
        self.config = config
        self.engine = engine
        self.repository = RouteRepository(engine)
        self.guard = FastGuard(gateway.fast_guard_failures)
        self.table = RouteTable(self.repository, config, self.guard)
        self.client = (
            client
            if client is not None
            else make_client(gateway.upstream_client, max_response_bytes=gateway.max_response_bytes)
        )
        self.writer: BatchWriter | ProcessWriter = (
            writer if writer is not None else _log_writer(config, engine)
        )
        self.mirror = ShadowMirror(
            self.client,
            self.writer,
            queue_size=gateway.shadow.queue_size,
            workers=gateway.shadow.workers,
            timeout_s=gateway.shadow.timeout_s,
        )
        self.mirror_strip = frozenset(h.lower() for h in gateway.shadow.strip_headers)
        self.policy = InputPolicy(config.logging)
        self.timeout = gateway.upstream_timeout_s
        # a hung canary must not hold its users for stable's full timeout: past this it is a
        # failure (the guard counts it; with failover on, stable answers the user)
        self.canary_timeout = min(gateway.canary_timeout_s, gateway.upstream_timeout_s)
        self.failover = gateway.canary_failover
        self.max_body = gateway.max_body_bytes
        self.body_timeout = gateway.body_timeout_s
        self.rng = random.Random()
        self.ready = False
        self._background: set[asyncio.Task[Any]] = set()
        # unknown ids are re-checked once the log's next batch has surely been written
        feedback = make_feedback_handler(
            FeedbackStore(engine),
            grace_s=2 * config.logging.flush_interval_s,
            token=gateway.resolved_feedback_token(),
        )
        self._endpoints: dict[tuple[str, str], Any] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics,
            ("POST", "/v1/feedback"): feedback,
        }

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.writer.start()
        await asyncio.to_thread(self.table.refresh)
        self.table.start()
        self.mirror.start()
        self.ready = True

    async def stop(self) -> None:
        """After the server stopped accepting and in-flight requests finished: flush it all."""
        self.ready = False
        self.table.stop()
        await self.mirror.close()
        if self._background:  # guard trips being recorded
            await asyncio.wait(self._background, timeout=5)
        await self.client.close()
        await self.writer.close()

    # request path ----------------------------------------------------------------------
    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request of the data plane: a hand-written router, cheaper than aiohttp's."""
        path = request.raw_path
        inference = match_inference_path(path)
        if inference is not None:
            if request.method != "POST":
                return _not_allowed("inference endpoints take POST", ["POST"])
            try:
                return await self.forward(request, *inference)
            except Exception:
                # nothing a request does may take the gateway down: answer and carry on
                log.exception("unhandled error serving %s", path)
                REJECTED.labels("internal").inc()
                return _error(500, "internal gateway error")
        model_route = match_model_route(path)
        if model_route is not None:
            if request.method != "GET":
                return _not_allowed("health, readiness and metadata endpoints take GET", ["GET"])
            try:
                return await self.pass_through(request, model_route[1])
            except Exception:
                log.exception("unhandled error serving %s", path)
                return _error(500, "internal gateway error")
        path = path.split("?", 1)[0]
        endpoint = self._endpoints.get((request.method, path))
        if endpoint is not None:
            if "Expect" in request.headers:
                await _continue(request)
            if request.can_read_body:
                try:
                    await self.read_body(request)  # kept by aiohttp for the endpoint's read()
                except TimeoutError:
                    return self._body_timeout(None)
            return await endpoint(request)
        allowed = sorted(m for m, p in self._endpoints if p == path)
        if allowed:
            return _not_allowed(f"method {request.method} not allowed on {path}", allowed)
        return _error(404, f"no such endpoint {path}")

    async def read_body(self, request: web.BaseRequest) -> bytes:
        """The request's body; TimeoutError when it takes longer than body_timeout_s to arrive
        (a client that sends half a body must not hold the connection for ever)."""
        async with asyncio.timeout(self.body_timeout):
            return await request.read()

    async def _inference_body(self, request: web.BaseRequest) -> bytes:
        """`read_body` for the request path: a body that has already arrived whole (most of
        them) is taken as it is, with no timer and no copy; else read under the deadline.
        The endpoints' `read_body` is kept for them by aiohttp; this one is not."""
        content = request.content
        if not content.is_eof():
            return await self.read_body(request)
        body = content.read_nowait()  # one chunk: that very bytes object
        if len(body) > self.max_body:  # chunked: no Content-Length was checked
            raise web.HTTPRequestEntityTooLarge(self.max_body, len(body))
        return body

    def _body_timeout(self, request_id: str | None) -> web.Response:
        REJECTED.labels("body_timeout").inc()
        response = _error(
            408, f"request body not received within {self.body_timeout:g}s", request_id
        )
        response.force_close()
        return response

    def _new_request_id(self) -> str:
        # time-ordered (UUIDv7) and unguessable (os.urandom): see gateway/ids.py
        return new_request_id()

    def _sticky_key(
        self, route: CompiledRoute, request: web.BaseRequest, parsed: Any
    ) -> str | None:
        if route.sticky_header is not None:
            return request.headers.get(route.sticky_header)
        if route.sticky_cookie is not None:
            return request.cookies.get(route.sticky_cookie)
        if route.sticky_json is not None:
            value = json_path(parsed, route.sticky_json)
            return None if value is None else str(value)
        return None

    async def forward(
        self, request: web.BaseRequest, protocol: Protocol, name: str
    ) -> web.StreamResponse:
        headers = request.headers
        request_id = headers.get("X-Request-ID") or self._new_request_id()
        if len(request_id) > MAX_REQUEST_ID:
            return _long_request_id()
        route = self.table.routes.get(name)
        if route is None:
            REJECTED.labels("unknown_model").inc()
            return _error(404, f"unknown model {name!r}", request_id)
        length = request.content_length
        if length is not None and length > self.max_body:
            REJECTED.labels("too_large").inc()
            return _error(413, f"body over {self.max_body} bytes", request_id)
        if "Expect" in headers:
            await _continue(request)
        try:
            body = await self._inference_body(request)
        except web.HTTPRequestEntityTooLarge:
            REJECTED.labels("too_large").inc()
            return _error(413, f"body over {self.max_body} bytes", request_id)
        except TimeoutError:
            return self._body_timeout(request_id)

        parsed: Any = _NOT_PARSED
        binary = headers.get(HEADER_LENGTH) if protocol is V2 else None
        try:
            if binary is not None:  # the body is forwarded as it came; this is only read
                if route.needs_json or self.policy.mode != "none":
                    parsed = _binary_request(body, binary)
            elif route.needs_json:
                try:
                    parsed = loads_bounded(body)
                except (ValueError, UnicodeDecodeError):
                    parsed = None  # no key and no JSON slices; the model judges the body
            shaped = self.policy.shape_input(
                body if parsed is _NOT_PARSED or parsed is None else parsed
            )
        except JsonTooDeep as exc:
            # valid JSON the gateway must read (JSON sticky key or slices, redacted or
            # hashed inputs) but cannot walk safely: refused whenever it must read it
            REJECTED.labels("json_too_deep").inc()
            _throttled.warning("json_too_deep", "request %s refused: %s", request_id, exc)
            return _error(400, f"request body: {exc}", request_id)
        key = self._sticky_key(route, request, parsed)
        slices = (
            extract_slices(route.slice_fields, headers, None if parsed is _NOT_PARSED else parsed)
            if route.slice_fields
            else _NO_SLICES
        )
        forward_headers = end_to_end(headers.items(), HOP_BY_HOP)
        if "X-Request-ID" not in headers:
            forward_headers.append(("X-Request-ID", request_id))
        path = request.raw_path

        role = (
            pick_role(key, route.salt, route.weight_bp, self.rng, route.baseline_bp)
            if route.split
            else "stable"
        )
        if route.mirror_bp and mirror_sampled(self.rng, route.mirror_bp):
            self._mirror(
                route, role, protocol, path, body, forward_headers, request_id, shaped, slices
            )
        if role == "canary" and route.paired:
            # queued before the canary is called, and never awaited: a slow or dead stable
            # copy cannot delay or change the canary's answer
            self.mirror.offer(
                ShadowJob(
                    route,
                    protocol,
                    route.stable_url + path,
                    body,
                    mirror_headers(forward_headers, self.mirror_strip),
                    request_id,
                    shaped,
                    slices,
                    "paired",
                )
            )

        version, url, metrics = route.targets[role]
        while True:
            ts = time.time()
            start = time.perf_counter()
            try:
                timeout = self.canary_timeout if role == "canary" else self.timeout
                with self.mirror.serving(route.model):  # the copies' like-for-like cap
                    response = await self.client.post(url + path, body, forward_headers, timeout)
            except UpstreamError as exc:
                elapsed = time.perf_counter() - start
                error_class: str | None = exc.error_class
                metrics.observe(elapsed, error_class)
                self._log(
                    route,
                    request_id,
                    version,
                    role,
                    ts,
                    elapsed,
                    0,
                    error_class,
                    _NO_ANSWER,
                    shaped,
                    slices,
                )
                if role == "canary":
                    self._canary_outcome(route, failed=True)
                    if self.failover:
                        FAILOVERS.labels(route.model).inc()
                        role = "stable"
                        version, url, metrics = route.targets[role]
                        continue
                elif role == "baseline":
                    # the baseline only measures: its user gets production's answer
                    BASELINE_FAILOVERS.labels(route.model).inc()
                    role = "stable"
                    version, url, metrics = route.targets[role]
                    continue
                status = 504 if error_class == "timeout" else 502
                return web.json_response(
                    {"error": f"upstream {version} {error_class}: {exc}"},
                    status=status,
                    headers={"X-Request-ID": request_id, "X-Model-Version": version},
                )
            elapsed = time.perf_counter() - start
            status = response.status
            error_class = _error_class(status) if status >= 400 else None
            metrics.observe(elapsed, error_class)
            self._log(
                route,
                request_id,
                version,
                role,
                ts,
                elapsed,
                status,
                error_class,
                parse_response(
                    protocol,
                    response.body,
                    status,
                    response.header(HEADER_LENGTH) if protocol is V2 else None,
                    route.scores_field,
                ),
                shaped,
                slices,
            )
            if role == "canary":
                self._canary_outcome(route, failed=status >= 500)
            elif role == "baseline" and status >= 500:
                # unlike a canary's 5xx (the candidate's answer, which the guard judges), a
                # baseline's 5xx is a broken measuring instance: production answers instead
                BASELINE_FAILOVERS.labels(route.model).inc()
                role = "stable"
                version, url, metrics = route.targets[role]
                continue
            return _respond(response, request_id, version)

    async def pass_through(self, request: web.BaseRequest, name: str | None) -> web.Response:
        """A health, readiness or metadata GET, answered by the stable version; not logged.

        Server health (`name` None) asks every model's stable version: with one model its
        answer is passed back as is; with several, 200 when all of them answer 200, else 503,
        with each model's status in the body.
        """
        request_id = request.headers.get("X-Request-ID") or self._new_request_id()
        if len(request_id) > MAX_REQUEST_ID:
            return _long_request_id()
        if name is not None:
            route = self.table.routes.get(name)
            if route is None:
                return _error(404, f"unknown model {name!r}", request_id)
            return await self._get_stable(request, route, request_id)
        routes = list(self.table.routes.values())
        if len(routes) == 1:
            return await self._get_stable(request, routes[0], request_id)
        answers = await asyncio.gather(*(self._get_stable(request, r, request_id) for r in routes))
        statuses = {r.model: a.status for r, a in zip(routes, answers, strict=True)}
        ok = bool(statuses) and all(s == 200 for s in statuses.values())
        return web.json_response(
            {"ready": ok, "models": statuses},
            status=200 if ok else 503,
            headers={"X-Request-ID": request_id},
        )

    async def _get_stable(
        self, request: web.BaseRequest, route: CompiledRoute, request_id: str
    ) -> web.Response:
        version, url, _ = route.targets["stable"]
        headers = end_to_end(request.headers.items(), HOP_BY_HOP)
        if "X-Request-ID" not in request.headers:
            headers.append(("X-Request-ID", request_id))
        try:
            response = await self.client.get(url + request.raw_path, headers, self.timeout)
        except UpstreamError as exc:
            return web.json_response(
                {"error": f"upstream {version} {exc.error_class}: {exc}"},
                status=504 if exc.error_class == "timeout" else 502,
                headers={"X-Request-ID": request_id, "X-Model-Version": version},
            )
        return _respond(response, request_id, version)

    def _mirror(
        self,
        route: CompiledRoute,
        role: str,
        protocol: Protocol,
        path: str,
        body: bytes,
        forward_headers: list[tuple[str, str]],
        request_id: str,
        shaped: str | None,
        slices: dict[str, Any],
    ) -> None:
        """Queue the sampled request's copies: the shadow's and, with a baseline, the baseline's.

        Both copies are of the same request, so the analysis pairs them by request id. A
        request the split already sent to the baseline gets no second baseline copy: its
        routed call is the baseline's row for that request id.
        """
        assert route.shadow_url is not None
        headers = mirror_headers(forward_headers, self.mirror_strip)
        mirror = self.mirror
        mirror.offer(
            ShadowJob(
                route, protocol, route.shadow_url + path, body, headers, request_id, shaped, slices
            )
        )
        if route.baseline_url is not None and role != "baseline":
            mirror.offer(
                ShadowJob(
                    route,
                    protocol,
                    route.baseline_url + path,
                    body,
                    headers,
                    request_id,
                    shaped,
                    slices,
                    "baseline",
                )
            )

    def _log(
        self,
        route: CompiledRoute,
        request_id: str,
        version: str,
        role: str,
        ts: float,
        elapsed: float,
        status: int,
        error_class: str | None,
        answer: tuple[Any, Any],  # (prediction, scores)
        shaped: str | None,
        slices: dict[str, Any],
    ) -> None:
        self.writer.submit(
            PredictionRecord(
                request_id,
                route.model,
                version,
                role,
                ts,
                elapsed * 1000.0,
                status,
                error_class,
                answer[0],
                shaped,
                slices,
                route.weight_bp,
                route.rollout_id,
                answer[1],
            )
        )

    def _canary_outcome(self, route: CompiledRoute, *, failed: bool) -> None:
        state = route.state
        if not self.guard.record(state, failed):
            return
        # tripped: no more canary traffic from this process, starting with the next request
        assert state.canary is not None
        threshold = self.guard.threshold(state)
        log.warning(
            "fast guard: %s canary %s failed %d times in a row; routing away",
            state.model,
            state.canary,
            threshold,
        )
        GUARD_TRIPS.labels(state.model, state.canary).inc()
        self.table.trip(state.model)
        reason = f"{threshold} consecutive canary failures (connection, timeout or 5xx)"
        task = asyncio.create_task(
            asyncio.to_thread(
                self.repository.record_guard_trip,
                state.model,
                state.canary,
                state.rollout_id,
                reason,
            )
        )
        self._background.add(task)
        task.add_done_callback(self._trip_recorded)

    def _trip_recorded(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not record a fast-guard trip: %s", task.exception())

    # operational endpoints -------------------------------------------------------------
    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        ready = self.ready and self.table.loaded
        return web.json_response(
            {"ready": ready, "models": sorted(self.table.routes)}, status=200 if ready else 503
        )

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        body, content_type = exposition()  # with several processes, the totals over all
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


def _respond(response: UpstreamResponse, request_id: str, version: str) -> web.Response:
    """The upstream's answer as the client gets it: its status, body and end-to-end headers
    (e.g. `Inference-Header-Content-Length`, which a V2 client needs to read a binary
    answer), plus the gateway's X-Request-ID and X-Model-Version."""
    headers = end_to_end(response.headers, _NOT_PASSED_BACK)
    headers += (("X-Request-ID", request_id), ("X-Model-Version", version))
    return web.Response(body=response.body, status=response.status, headers=CIMultiDict(headers))


def build_app(
    config: CoalmineConfig,
    engine: Engine,
    *,
    client: UpstreamClient | None = None,
    writer: BatchWriter | None = None,
) -> web.Application:
    """The gateway as an aiohttp Application, to mount or run beside other apps in-process.

    Starting the app loads the routes and starts the log writer; cleaning it up flushes
    the log. Routes are NOT seeded here: the caller seeds once
    (`RouteRepository.seed_from_config`), so several gateway processes do not race on it.
    `coalmine gateway` itself serves `Gateway.dispatch` on aiohttp's low-level server
    (`server.start_site`), which skips the Application's router and middleware per request.
    """
    gateway = Gateway(config, engine, client=client, writer=writer)
    # aiohttp enforces the limit on bodies without Content-Length (chunked) as they stream
    app = web.Application(client_max_size=config.gateway.max_body_bytes)
    app[GATEWAY_KEY] = gateway
    app.router.add_route("*", "/{tail:.*}", gateway.dispatch)

    async def on_startup(_: web.Application) -> None:
        await gateway.start()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
