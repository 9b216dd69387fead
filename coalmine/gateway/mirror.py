"""The shadow mirror: copies of production requests sent to the shadow, off the request path.

A bounded queue with its own worker tasks and its own timeout. The request path only does a
`put_nowait`; a full queue drops the copy and counts it, so a slow, failing or unreachable
shadow can never add latency to, or change the status of, a production response. The
shadow's answer is parsed and logged (role "shadow"), never returned.

With a baseline on the route, each sampled request is also copied to the baseline (a fresh
instance of the stable version) through the same queue, logged as role "baseline" with the
stable version: production-vs-baseline disagreement on the same request ids is the noise
floor that production-vs-shadow disagreement is measured against.

Paired canary: each request the canary answers is copied to the stable version through the
same queue, logged as role "paired" with the stable version, so the canary's quality
criteria compare both versions on the same requests. A full queue drops the copy (that
request is then judged unpaired only by error rate and latency, like every canary call).

Like-for-like concurrency: a copy goes out only while fewer copies of its model and role are
in flight than production calls of that model were in flight when it was queued (its own
included). Without that cap the workers (16 by default) pile up to 16 copies on a shadow that
stalls for a moment, each timed with the whole stall, while production's clients had only a
few calls in flight: measured in a live shadow of an identical model on a loaded 2-core
machine (3 client threads), the shadow's p99 was 3.5× production's with 16 workers and 1.2×
with 3. A copy waiting for its turn waits in the queue, which is not timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from coalmine.binary_tensors import HEADER_LENGTH
from coalmine.gateway.metrics import SHADOW_DROPS, SHADOW_QUEUE
from coalmine.gateway.protocols import Protocol
from coalmine.gateway.upstream.base import Headers, RequestHeaders, UpstreamClient, UpstreamError
from coalmine.log.answers import raw_record
from coalmine.log.record import PredictionSink

__all__ = ["ShadowJob", "ShadowMirror", "mirror_headers"]

log = logging.getLogger(__name__)


_MARK = RequestHeaders([("X-Shadow", "1")])


def mirror_headers(forward_headers: Headers, strip: frozenset[str]) -> RequestHeaders:
    """The headers of a mirror copy: production's, less those named in `strip` (lower case;
    by default the end user's credentials, which a shadow has no business receiving), and
    marked X-Shadow so the shadow's server can tell a copy from a user's request. Made once
    per request however many copies it has (shadow, baseline, paired)."""
    if not isinstance(forward_headers, RequestHeaders):
        forward_headers = RequestHeaders(list(forward_headers))
    return forward_headers.without(strip, _MARK)


class ShadowJob:
    """One mirror copy: everything the worker needs to call the shadow and log its answer."""

    __slots__ = (
        "body", "cap", "headers", "input", "protocol", "request_id", "role", "route", "slices",
        "url",
    )  # fmt: skip

    def __init__(
        self,
        route: Any,  # CompiledRoute, at the time of the production request
        protocol: Protocol,
        url: str,
        body: bytes,
        headers: Headers,
        request_id: str,
        input: str | bytes | None,  # bytes: for the log's writer to shape
        slices: dict[str, Any],
        # or "baseline": the copy for the stable version's fresh instance; or "paired": the
        # stable version's copy of a canary request (paired canary)
        role: str = "shadow",
    ) -> None:
        self.route = route
        self.role = role
        self.protocol = protocol
        self.url = url
        self.body = body
        self.headers = headers
        self.request_id = request_id
        self.input = input
        self.slices = slices
        self.cap = 1  # copies of its model and role that may be in flight (set by `offer`)


class ShadowMirror:
    def __init__(
        self,
        client: UpstreamClient,
        sink: PredictionSink,
        *,
        queue_size: int,
        workers: int,
        timeout_s: float,
    ) -> None:
        self._client = client
        self._sink = sink
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(queue_size)
        self._workers = workers
        self._timeout = timeout_s
        self._tasks: list[asyncio.Task[None]] = []
        self._drops: dict[str, Any] = {}
        self.dropped = 0
        self._serving: dict[str, int] = {}  # production calls in flight per model
        self._copies: dict[tuple[str, str], int] = {}  # copies in flight per (model, role)
        self._done = asyncio.Condition()

    @contextlib.contextmanager
    def serving(self, model: str) -> Iterator[None]:
        """Around a production call of `model`: counts it in flight (the copies' cap)."""
        self._serving[model] = self._serving.get(model, 0) + 1
        try:
            yield
        finally:
            self._serving[model] -= 1

    def offer(self, job: ShadowJob) -> bool:
        """Queue a copy without waiting; False (and counted) when the queue is full."""
        # production's calls in flight now, and the one this request is about to make
        job.cap = self._serving.get(job.route.model, 0) + 1
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._count_drop(job)
            return False
        return True

    def _count_drop(self, job: ShadowJob) -> None:
        self.dropped += 1
        model = job.route.model
        child = self._drops.get(model)
        if child is None:
            child = self._drops[model] = SHADOW_DROPS.labels(model)
        child.inc()

    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        SHADOW_QUEUE.set_function(self._queue.qsize)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"coalmine-shadow-{i}")
            for i in range(self._workers)
        ]

    async def close(self, drain_s: float = 2.0) -> None:
        """Let queued copies go out for up to `drain_s` seconds, then stop the workers."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        unsent = 0
        while not self._queue.empty():  # copies never sent: dropped, and counted as such
            self._count_drop(self._queue.get_nowait())
            unsent += 1
        if unsent:
            log.warning(
                "mirror stopped with %d cop%s still queued after %g s of draining; dropped "
                "(counted in coalmine_gateway_shadow_drops_total)",
                unsent,
                "y" if unsent == 1 else "ies",
                drain_s,
            )

    async def _work(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            try:
                await self._call_in_turn(job)
            except asyncio.CancelledError:
                self._count_drop(job)  # stopped mid-call: no answer to log
                queue.task_done()
                raise
            except Exception:
                log.exception("shadow call for %s failed unexpectedly", job.request_id)
            queue.task_done()

    async def _call_in_turn(self, job: ShadowJob) -> None:
        """`_call` once fewer than `job.cap` copies of its model and role are in flight."""
        key = (job.route.model, job.role)
        async with self._done:
            await self._done.wait_for(lambda: self._copies.get(key, 0) < job.cap)
            self._copies[key] = self._copies.get(key, 0) + 1
        try:
            await self._call(job)
        finally:
            self._copies[key] -= 1  # before any await: a cancelled worker still frees its turn
            async with self._done:
                self._done.notify_all()

    async def _call(self, job: ShadowJob) -> None:
        route = job.route
        ts = time.time()
        start = time.perf_counter()
        status = 0
        error_class: str | None = None
        answer: bytes | None = None
        header_length: str | None = None
        try:
            response = await self._client.post(job.url, job.body, job.headers, self._timeout)
        except UpstreamError as exc:
            error_class = exc.error_class
        else:
            status = response.status
            if status >= 500:
                error_class = "http_5xx"
            elif status >= 400:
                error_class = "http_4xx"
            answer, header_length = response.body, response.header(HEADER_LENGTH)
        elapsed = time.perf_counter() - start
        if job.role == "baseline":
            metrics, version = route.baseline_metrics, route.stable
        elif job.role == "paired":
            metrics, version = route.paired_metrics, route.stable
        else:
            metrics, version = route.shadow_metrics, route.shadow
        metrics.observe(elapsed, error_class)
        self._sink.submit(  # the answer is decoded by the log's writer
            raw_record(
                job.request_id,
                route.model,
                version,
                job.role,
                ts,
                elapsed * 1000.0,
                status,
                error_class,
                job.protocol.name,
                answer,
                header_length,
                route.scores_field,
                job.input,
                job.slices,
                route.weight_bp,
                route.rollout_id,
            )
        )
