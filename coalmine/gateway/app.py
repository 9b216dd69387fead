"""The gateway's request path: the data plane, and nothing that controls it.

Per inference request: resolve the model's compiled route, derive the sticky key, pick
stable, canary or baseline, forward (the mirror copies for the shadow, the baseline and the
paired stable version queued once production's request is written), and hand one log record
per upstream call to the prediction log's buffer. Nothing on this path touches the database
or blocks: route changes arrive through the table's poller thread, and records are written in
batches by the log writer.

The path is apart from any HTTP server: it takes a `wire.Request` and its body (read whole
by the server, under the body limit and deadline) and returns a `wire.Answer`. The servers
are `protocol_server` (asyncio Protocol + httptools) and aiohttp (`aiohttp_adapter`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
from coalmine.gateway.mirror import ShadowMirror, mirror_headers
from coalmine.gateway.protocols import (
    MAX_LOGGED_TENSOR_BYTES,
    V2,
    Protocol,
    match_inference_path,
    match_model_route,
)
from coalmine.gateway.table import CompiledRoute, RouteTable
from coalmine.gateway.upstream.base import (
    HOP_BY_HOP,
    HOP_BY_HOP_BYTES,
    RESPONSE_NOT_FORWARDED,
    RequestHeaders,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    end_to_end,
    end_to_end_lines,
    end_to_end_raw,
)
from coalmine.gateway.upstream.registry import make_client
from coalmine.gateway.wire import Answer, Request, json_answer
from coalmine.log.answers import raw_record
from coalmine.log.feedback_http import FeedbackEndpoint, FeedbackStore
from coalmine.log.policy import (
    InputPolicy,
    JsonTooDeep,
    extract_slices,
    json_path,
    loads_bounded,
)
from coalmine.log.process_writer import ProcessWriter
from coalmine.log.throttle import ThrottledLog
from coalmine.log.writer import BatchWriter
from coalmine.routing.split import mirror_sampled
from coalmine.routing.split import route as pick_role
from coalmine.store.routes import RouteRepository

__all__ = ["Endpoint", "Gateway"]

log = logging.getLogger(__name__)
_throttled = ThrottledLog(log)  # lines any client can cause at will

_NO_SLICES: dict[str, Any] = {}
_NOT_PARSED = object()
MAX_REQUEST_ID = 128  # characters: the prediction log's column and the feedback API's limit
# the gateway's own answer headers: an upstream's value of these is replaced, not repeated
# (Date: the server writes its own, as nginx does; RFC 9110 6.6.1 allows one per message)
_OWN_HEADERS = frozenset({"x-request-id", "x-model-version", "date"})
_NOT_PASSED_BACK = RESPONSE_NOT_FORWARDED | _OWN_HEADERS
_NOT_PASSED_BACK_BYTES = frozenset(h.encode() for h in _NOT_PASSED_BACK)


Endpoint = Callable[[Request, bytes], Awaitable[Answer]]


def _error(status: int, message: str, request_id: str | None = None) -> Answer:
    headers = [("X-Request-ID", request_id)] if request_id else []
    return json_answer({"error": message}, status, headers)


def _not_allowed(message: str, allowed: list[str]) -> Answer:
    answer = _error(405, message)
    answer.headers.append(("Allow", ", ".join(allowed)))  # a 405 must say what is (RFC 9110)
    return answer


def _long_request_id() -> Answer:
    # refused rather than cut: the id is echoed to the client, who sends it back with the
    # label, so the log must hold exactly what was echoed
    REJECTED.labels("request_id_too_long").inc()
    return _error(
        400,
        f"X-Request-ID: longer than {MAX_REQUEST_ID} characters (the most the prediction "
        "log and /v1/feedback keep)",
    )


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
            max_age_s=gateway.shadow.max_age_s,
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
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self.ready = False
        self._background: set[asyncio.Task[Any]] = set()
        # unknown ids are re-checked once the log's next batch has surely been written
        self._feedback = FeedbackEndpoint(
            FeedbackStore(engine),
            grace_s=2 * config.logging.flush_interval_s,
            token=gateway.resolved_feedback_token(),
        )
        self._endpoints: dict[tuple[str, str], Endpoint] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics,
            ("POST", "/v1/feedback"): self.feedback,
        }

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        # kept: asyncio.get_running_loop() makes a getpid() system call (Python 3.11)
        self._loop = asyncio.get_running_loop()
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
    async def dispatch(self, request: Request, body: bytes) -> Answer:
        """Every request of the data plane: a hand-written router, cheaper than aiohttp's."""
        path = request.raw_path
        inference = match_inference_path(path)
        if inference is not None:
            if request.method != "POST":
                return _not_allowed("inference endpoints take POST", ["POST"])
            try:
                return await self.forward(request, body, *inference)
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
            return await endpoint(request, body)
        allowed = sorted(m for m, p in self._endpoints if p == path)
        if allowed:
            return _not_allowed(f"method {request.method} not allowed on {path}", allowed)
        return _error(404, f"no such endpoint {path}")

    # the servers' refusals of a body, with the same figures and wording on both
    def too_large_answer(self, request: Request) -> Answer:
        """A body over `max_body_bytes` (declared, or found so as it streamed)."""
        REJECTED.labels("too_large").inc()
        return _error(413, f"body over {self.max_body} bytes", _echoed_id(request))

    def body_timeout_answer(self, request: Request) -> Answer:
        """A body that did not arrive whole within `body_timeout_s`: the connection closes
        (a client that sends half a body must not hold it for ever)."""
        REJECTED.labels("body_timeout").inc()
        answer = _error(
            408, f"request body not received within {self.body_timeout:g}s", _echoed_id(request)
        )
        answer.close = True
        return answer

    def _new_request_id(self) -> str:
        # time-ordered (UUIDv7) and unguessable (os.urandom): see gateway/ids.py
        return new_request_id()

    def _sticky_key(self, route: CompiledRoute, request: Request, parsed: Any) -> str | None:
        if route.sticky_header is not None:
            return request.header(route.sticky_header)
        if route.sticky_cookie is not None:
            return request.cookies.get(route.sticky_cookie)
        if route.sticky_json is not None:
            value = json_path(parsed, route.sticky_json)
            return None if value is None else str(value)
        return None

    async def forward(self, request: Request, body: bytes, protocol: Protocol, name: str) -> Answer:
        client_id = request.header("X-Request-ID")
        request_id = client_id or self._new_request_id()
        if len(request_id) > MAX_REQUEST_ID:
            return _long_request_id()
        route = self.table.routes.get(name)
        if route is None:
            REJECTED.labels("unknown_model").inc()
            return _error(404, f"unknown model {name!r}", request_id)

        parsed: Any = _NOT_PARSED
        binary = request.header(HEADER_LENGTH) if protocol is V2 else None
        try:
            if binary is not None:  # the body is forwarded as it came; this is only read
                if route.needs_json or self.policy.mode != "none":
                    parsed = _binary_request(body, binary)
            elif route.needs_json:
                try:
                    parsed = loads_bounded(body)
                except (ValueError, UnicodeDecodeError):
                    parsed = None  # no key and no JSON slices; the model judges the body
            shaped = self.policy.shape_later(
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
            extract_slices(
                route.slice_fields, request.headers, None if parsed is _NOT_PARSED else parsed
            )
            if route.slice_fields
            else _NO_SLICES
        )
        # encoded once for the call and its copies
        forward_headers = _forward_headers(request, None if client_id is not None else request_id)
        path = request.raw_path

        role = (
            pick_role(key, route.salt, route.weight_bp, self.rng, route.baseline_bp)
            if route.split
            else "stable"
        )
        mirrored = bool(route.mirror_bp) and mirror_sampled(self.rng, route.mirror_bp)
        # the stable version's copy of a request the canary answers: never awaited, so a
        # slow or dead stable copy cannot delay or change the canary's answer
        paired = role == "canary" and route.paired
        if mirrored or paired:
            # the copies are built and queued by a callback, which runs once this path has
            # yielded: after production's request is written (on an idle pooled connection
            # the httptools client writes before its first await), so at one connection
            # none of the copies' work (~10 µs, measured) is on production's way out
            (self._loop or asyncio.get_running_loop()).call_soon(
                self._copies, route, role, mirrored, paired, protocol, path, body,
                forward_headers, request_id, shaped, slices,
            )  # fmt: skip

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
                    protocol,
                    None,
                    None,
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
                return json_answer(
                    {"error": f"upstream {version} {error_class}: {exc}"},
                    status,
                    (("X-Request-ID", request_id), ("X-Model-Version", version)),
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
                protocol,
                response.body,
                response.header(HEADER_LENGTH) if protocol is V2 else None,
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

    async def pass_through(self, request: Request, name: str | None) -> Answer:
        """A health, readiness or metadata GET, answered by the stable version; not logged.

        Server health (`name` None) asks every model's stable version: with one model its
        answer is passed back as is; with several, 200 when all of them answer 200, else 503,
        with each model's status in the body.
        """
        client_id = request.header("X-Request-ID")
        request_id = client_id or self._new_request_id()
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
        return json_answer(
            {"ready": ok, "models": statuses},
            200 if ok else 503,
            (("X-Request-ID", request_id),),
        )

    async def _get_stable(self, request: Request, route: CompiledRoute, request_id: str) -> Answer:
        version, url, _ = route.targets["stable"]
        sent = request.header("X-Request-ID") is not None
        headers = _forward_headers(request, None if sent else request_id)
        try:
            response = await self.client.get(url + request.raw_path, headers, self.timeout)
        except UpstreamError as exc:
            return json_answer(
                {"error": f"upstream {version} {exc.error_class}: {exc}"},
                504 if exc.error_class == "timeout" else 502,
                (("X-Request-ID", request_id), ("X-Model-Version", version)),
            )
        return _respond(response, request_id, version)

    def _copies(
        self,
        route: CompiledRoute,
        role: str,
        mirrored: bool,
        paired: bool,
        protocol: Protocol,
        path: str,
        body: bytes,
        forward_headers: RequestHeaders,
        request_id: str,
        shaped: str | bytes | None,
        slices: dict[str, Any],
    ) -> None:
        """Queue a request's copies, once its production call is under way (a callback:
        whatever goes wrong here is logged and never reaches production's answer).

        `mirrored`: the shadow's copy and, with a baseline, the baseline's. Both are of the
        same request, so the analysis pairs them by request id; a request the split already
        sent to the baseline gets no second baseline copy (its routed call is the baseline's
        row for that request id). `paired`: the stable version's copy of a request the
        canary answers (role "paired"). One set of headers serves them all.

        While a target is down (`mirror.down`), its copies are counted and held here, and
        while the queue is full (a slow shadow) they are counted as dropped, before anything
        is built for them: a dead or slow shadow costs a lookup, not a copy.
        """
        targets: tuple[tuple[str, str], ...] = ()  # (the version's URL, the copy's role)
        if mirrored:
            if route.shadow_url is not None:
                targets = ((route.shadow_url, "shadow"),)
            if route.baseline_url is not None and role != "baseline":
                targets += ((route.baseline_url, "baseline"),)
        if paired:
            targets += ((route.stable_url, "paired"),)
        mirror = self.mirror
        try:
            if mirror.down:
                targets = tuple(
                    (url, as_role)
                    for url, as_role in targets
                    if not mirror.held(url, route, as_role, protocol, request_id, shaped, slices)
                )
            if not targets or mirror.full(route.model, len(targets)):
                return
            headers = mirror_headers(forward_headers, self.mirror_strip)
            for url, as_role in targets:
                mirror.offer(
                    route, protocol, url + path, body, headers, request_id, shaped, slices,
                    as_role, started=True,
                )  # fmt: skip
        except Exception:
            log.exception("the mirror copies of %s failed unexpectedly", request_id)

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
        protocol: Protocol,
        answer: bytes | None,  # the upstream's body; None when no response arrived
        header_length: str | None,
        shaped: str | bytes | None,
        slices: dict[str, Any],
    ) -> None:
        # the answer is decoded (and a deferred input shaped) by the log's writer
        self.writer.submit(
            raw_record(
                request_id,
                route.model,
                version,
                role,
                ts,
                elapsed * 1000.0,
                status,
                error_class,
                protocol.name,
                answer,
                header_length,
                route.scores_field,
                shaped,
                slices,
                route.weight_bp,
                route.rollout_id,
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
    async def healthz(self, request: Request, body: bytes) -> Answer:
        return json_answer({"status": "ok"})

    async def readyz(self, request: Request, body: bytes) -> Answer:
        ready = self.ready and self.table.loaded
        return json_answer(
            {"ready": ready, "models": sorted(self.table.routes)}, 200 if ready else 503
        )

    async def metrics(self, request: Request, body: bytes) -> Answer:
        payload, content_type = exposition()  # with several processes, the totals over all
        return Answer(200, [("Content-Type", content_type)], payload)

    async def feedback(self, request: Request, body: bytes) -> Answer:
        reply = self._feedback.refused(request.header("Authorization"))
        status, payload, headers = reply or await self._feedback.answer(body)
        return json_answer(payload, status, headers)


def _forward_headers(request: Request, request_id: str | None) -> RequestHeaders:
    """The request's end-to-end headers for its upstream calls, with `request_id` added
    as X-Request-ID when given (the client sent none). Header bytes as the client sent
    them are passed on as they are (`Request.from_raw`), not decoded and re-encoded."""
    raw = request.raw_headers
    if raw is not None:
        kept_raw = end_to_end_raw(raw, HOP_BY_HOP_BYTES)
        if request_id is not None:
            kept_raw.append((b"X-Request-ID", request_id.encode()))  # (made here: ASCII)
        return RequestHeaders.from_raw(kept_raw)
    kept = end_to_end(request.headers.items(), HOP_BY_HOP)
    if request_id is not None:
        kept.append(("X-Request-ID", request_id))
    return RequestHeaders(kept)


def _echoed_id(request: Request) -> str | None:
    """The client's X-Request-ID, when it is one the gateway would accept."""
    request_id = request.header("X-Request-ID")
    return request_id if request_id and len(request_id) <= MAX_REQUEST_ID else None


def _respond(response: UpstreamResponse, request_id: str, version: str) -> Answer:
    """The upstream's answer as the client gets it: its status, body and end-to-end headers
    (e.g. `Inference-Header-Content-Length`, which a V2 client needs to read a binary
    answer), plus the gateway's X-Request-ID and X-Model-Version. A raw head's lines are
    passed on as the upstream sent them (not decoded and re-encoded)."""
    own = [("X-Request-ID", request_id), ("X-Model-Version", version)]
    head = response.raw_head
    if head is not None:
        lines = end_to_end_lines(head, _NOT_PASSED_BACK_BYTES)
        return Answer(response.status, own, response.body, head=lines)
    return Answer(
        response.status, end_to_end(response.headers, _NOT_PASSED_BACK) + own, response.body
    )
