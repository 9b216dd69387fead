"""The shadow mirror: copies of production requests sent to the shadow, off the request path.

A bounded queue of plain tuples, at most `workers` copies in flight, and its own timeout.
The request path only appends a tuple (a full queue drops the copy and counts it), so a
slow, failing or unreachable shadow can never add latency to, or change the status of, a
production response. The shadow's answer is parsed and logged (role "shadow"), never
returned. Copies go out from one callback the loop runs after the request path has yielded,
with `UpstreamClient.post_soon`: no task and no future per copy (the httptools client writes
on a pooled connection and is called back with the answer).

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
included). Without that cap the workers (16 by default) piled up to 16 copies on a shadow that
stalls for a moment, each timed with the whole stall, while production's clients had only a
few calls in flight: measured in a live shadow of an identical model on a loaded 2-core
machine (3 client threads), the shadow's p99 was 3.5× production's with 16 workers and 1.2×
with 3. A copy waiting for its turn waits in the queue, which is not timed.

Fresh copies: a copy still queued `max_age_s` (1 s) after it was offered is dropped when its
turn comes, and counted as a drop. A shadow slower than production fills the queue and keeps
it full (the like-for-like cap lets only so many copies out): without the bound every copy
sent was queue_size / sent-per-second old (~6 s at 2,048 copies and a 50 ms shadow, measured),
a replay of the past rather than a mirror. Dropping the stale head (rather than the oldest
copy at each offer, which still sends copies queue_size / rate old) keeps the request path's
full-queue test a test and a count, and the order of each model and role's copies.
The queue then takes in only what the shadow takes out in time: its room shrinks by one
per stale copy (down to `workers`) and grows by one per copy sent within half its age bound
(up to `queue_size`). Without that, a slow shadow's full queue was emptied of stale copies
about once per `max_age_s` and refilled at once: ~2,000 copies/s built by the request path
to be dropped unsent, +8 µs per request in the gateway against dropping them at the offer
(measured, benchmarks/gateway.py's 50 ms shadow).

A target that is down is left alone a while: after a copy's connect to a host:port is refused
or times out, copies to it are not sent for a backoff (0.1 s, doubling to 5 s while probes
still fail, ended by the first call that reaches it; gateway/backoff.py). Such copies are
counted in coalmine_gateway_shadow_unreachable_total, and one every `held_row_s` (0.1 s) per
target is logged as the failure that put it down (error_class "connection" or "timeout", as
it would have failed): the analysis still judges a dead shadow by a steady stream of failed
calls (error_rate FAILs it; never "no data"), without a connect attempt per copy (which cost
about as much CPU as a live shadow's call) or an error row per copy (about a third of the
rest, measured: benchmarks/gateway.py "dead shadow"). One throttled line per target says
when it goes down and when it is back. Production's own calls never go through this: their
failures go to the failover and the fast guard as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from coalmine.binary_tensors import HEADER_LENGTH
from coalmine.gateway.backoff import Backoff
from coalmine.gateway.metrics import SHADOW_DROPS, SHADOW_QUEUE, SHADOW_UNREACHABLE
from coalmine.gateway.protocols import V2, Protocol
from coalmine.gateway.upstream.base import (
    Headers,
    RequestHeaders,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamUnreachable,
    UpstreamUnreachableTimeout,
)
from coalmine.log.answers import raw_record
from coalmine.log.record import PredictionSink
from coalmine.log.throttle import ThrottledLog

__all__ = ["ShadowJob", "ShadowMirror", "mirror_headers"]

log = logging.getLogger(__name__)


# as bytes: a request's headers kept as received (RequestHeaders.from_raw) take it without
# encoding it again per request (~2 µs of the copy's headers, measured)
_MARK = RequestHeaders.from_raw([(b"X-Shadow", b"1")])
# what a copy held back from a down target is logged as: the failure that put it down
_HELD = {
    "connection": UpstreamUnreachable("not sent: the target refused a connect moments before"),
    "timeout": UpstreamUnreachableTimeout("not sent: a connect to the target timed out"),
}


def mirror_headers(forward_headers: Headers, strip: frozenset[str]) -> RequestHeaders:
    """The headers of a mirror copy: production's, less those named in `strip` (lower case;
    by default the end user's credentials, which a shadow has no business receiving), and
    marked X-Shadow so the shadow's server can tell a copy from a user's request. Made once
    per request however many copies it has (shadow, baseline, paired)."""
    if not isinstance(forward_headers, RequestHeaders):
        forward_headers = RequestHeaders(list(forward_headers))
    return forward_headers.without(strip, _MARK)


# A queued copy: (route, protocol, url, body, headers, request_id, input, slices, role, cap,
# due), route being the CompiledRoute at the time of the production request, role "shadow",
# "baseline" (the stable version's fresh instance) or "paired" (the stable version's copy of
# a canary request), cap the copies of its model and role that may be in flight, and due the
# monotonic time after which it is too old to send (dropped when its turn comes).
ShadowJob = tuple[Any, Protocol, str, bytes, Headers, str, Any, dict[str, Any], str, int, float]


class _Serving:
    """Counts a model's production calls in flight while entered (re-entrant: a count)."""

    __slots__ = ("_counts", "_model")

    def __init__(self, counts: dict[str, int], model: str) -> None:
        self._counts = counts
        self._model = model
        counts.setdefault(model, 0)

    def __enter__(self) -> None:
        self._counts[self._model] += 1

    def __exit__(self, *exc: object) -> None:
        self._counts[self._model] -= 1


class ShadowMirror:
    def __init__(
        self,
        client: UpstreamClient,
        sink: PredictionSink,
        *,
        queue_size: int,
        workers: int,
        timeout_s: float,
        max_age_s: float = 1.0,
    ) -> None:
        self._client = client
        self._sink = sink
        self._queue: deque[ShadowJob] = deque()  # in the order offered
        # per (model, role): copies that found their model and role at its cap, in order
        self._parked: dict[tuple[str, str], deque[ShadowJob]] = {}
        self._queued = 0  # in both
        self._queue_size = queue_size
        self._room = queue_size  # copies queued at most now: fewer while copies go stale
        self._workers = workers  # copies in flight at most
        self._timeout = timeout_s
        self._max_age = max_age_s  # a copy queued longer is dropped when its turn comes
        self._half_age = max_age_s / 2
        self.clock = time.monotonic  # the queue's clock (a test sets it)
        self._in_flight = 0
        self._stopped = False
        self._pump_due = False
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self._idle: asyncio.Future[None] | None = None  # close() waits for the last answer
        self._drops = SHADOW_DROPS.counts  # (model,) -> copies dropped
        self.dropped = 0
        self._serving: dict[str, int] = {}  # production calls in flight per model
        self._counters: dict[str, _Serving] = {}
        self._copies: dict[tuple[str, str], int] = {}  # copies in flight per (model, role)
        self.backoff = Backoff()  # targets down after a failed connect
        # the same dict: truthy while a target is down, when the request path asks `held`
        self.down = self.backoff.down
        self._targets: dict[str, str] = {}  # url -> "host:port"
        self._unreachable = SHADOW_UNREACHABLE.counts  # (model, role) -> copies held
        self.unreachable = 0  # copies not sent to a down target
        self.unlogged = 0  # of those, not logged (the others are logged as failed)
        self.held_row_s = 0.1  # per target, a held copy logged at most this often
        self._row_due: dict[str, float] = {}
        self._lines = ThrottledLog(log)

    def serving(self, model: str) -> _Serving:
        """Around a production call of `model`: counts it in flight (the copies' cap).
        One reusable context manager per model (a generator-based one cost ~1.5 µs)."""
        counter = self._counters.get(model)
        if counter is None:
            counter = self._counters[model] = _Serving(self._serving, model)
        return counter

    def offer(
        self,
        route: Any,  # CompiledRoute, at the time of the production request
        protocol: Protocol,
        url: str,
        body: bytes,
        headers: Headers,
        request_id: str,
        input: str | bytes | None,  # bytes: for the log's writer to shape
        slices: dict[str, Any],
        role: str = "shadow",
        *,
        started: bool = False,
    ) -> bool:
        """Queue a copy without waiting; False (and counted) when the queue is full. (A copy
        to a target that is down is held when its turn comes; the request path asks `held`
        first, so that such a copy costs no headers, no job and no turn in the queue.)
        `started`: the request's own production call is under way, counted by `serving`
        (the gateway queues its copies once that call is written); else it is about to be."""
        if self._queued >= self._room or self._stopped:
            self._count_drop(route.model)
            return False
        # production's calls in flight now, its own included (at least that one: a call
        # that failed at once has left the count by the time its copies are queued)
        serving = self._serving.get(route.model, 0)
        cap = serving if started and serving else serving + 1
        due = self.clock() + self._max_age
        job = (route, protocol, url, body, headers, request_id, input, slices, role, cap, due)
        self._queue.append(job)
        self._queued += 1
        loop = self._loop  # set once started
        if not self._pump_due and loop is not None:
            # after what is ready now: the request path, which the gateway has let write its
            # production request first, and production answers already read
            self._pump_due = True
            loop.call_soon(self._pump)
        return True

    def held(
        self,
        base_url: str,
        route: Any,  # CompiledRoute
        role: str,
        protocol: Protocol,
        request_id: str,
        input: str | bytes | None,
        slices: dict[str, Any],
    ) -> bool:
        """Whether a copy of this request to `base_url` (the version's URL, without the
        request's path) is held back, its target being down: then it is counted, and logged
        as the failure that put the target down when its last such row is `held_row_s` old,
        and the caller offers nothing. Asked by the request path while `down` is not empty,
        before it builds anything for the copy (a dead shadow then costs a few dict lookups
        per request)."""
        target = self._targets.get(base_url) or self._target(base_url)
        error_class = self.backoff.held(target, probe=False)
        if error_class is None or self._stopped:
            return False
        self._held(route, role, protocol, request_id, input, slices, target, error_class)
        return True

    def full(self, model: str, copies: int = 1) -> bool:
        """Whether the queue has no room now (or the mirror has stopped): then the `copies`
        of a request to `model` are counted as dropped, and the caller builds nothing for
        them. (`offer` checks again: with one place left for two copies, the second is
        dropped there.) A slow shadow's full queue then costs a request a test and a count."""
        if self._queued < self._room and not self._stopped:
            return False
        self._count_drop(model, copies)
        return True

    def _count_drop(self, model: str, copies: int = 1) -> None:
        self.dropped += copies
        key = (model,)
        drops = self._drops
        drops[key] = drops.get(key, 0) + copies

    def depth(self) -> int:
        return self._queued

    def start(self) -> None:
        SHADOW_QUEUE.set_function(self.depth)
        # kept: asyncio.get_running_loop() makes a getpid() system call (Python 3.11)
        self._loop = loop = asyncio.get_running_loop()
        if self._queue:
            self._pump_due = True
            loop.call_soon(self._pump)

    async def close(self, drain_s: float = 2.0) -> None:
        """Let queued copies go out for up to `drain_s` seconds, then stop: copies still in
        flight or queued are dropped, and counted as such. Idempotent."""
        loop = self._loop  # None: never started
        if loop is None or self._stopped:
            return
        if self._queued or self._in_flight:
            self._idle = loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self._idle
        self._stopped = True
        for (model, _), n in self._copies.items():  # stopped mid-call: no answer to log
            if n:
                self._count_drop(model, n)
        self._copies.clear()
        self._in_flight = 0
        unsent = 0
        waiting = [*self._queue, *(job for parked in self._parked.values() for job in parked)]
        for job in waiting:  # copies never sent: dropped, and counted as such
            self._count_drop(job[0].model)
            unsent += 1
        self._queue.clear()
        self._parked.clear()
        self._queued = 0
        if unsent:
            log.warning(
                "mirror stopped with %d cop%s still queued after %g s of draining; dropped "
                "(counted in coalmine_gateway_shadow_drops_total)",
                unsent,
                "y" if unsent == 1 else "ies",
                drain_s,
            )

    def _pump(self) -> None:
        """Send queued copies while fewer than `workers` are in flight, each only while its
        model and role are under its cap (else it waits, parked in order, for a turn)."""
        self._pump_due = False
        queue, parked, copies = self._queue, self._parked, self._copies
        now = self.clock()
        while queue and self._in_flight < self._workers and not self._stopped:
            job = queue.popleft()
            if job[10] < now:  # too old: a turn for a fresher copy
                self._stale(job)
                continue
            key = (job[0].model, job[8])
            waiting = parked.get(key)
            if waiting:  # behind its model and role's earlier copies
                waiting.append(job)
                self._send_parked(key, waiting)
            elif copies.get(key, 0) >= job[9]:
                if waiting is None:
                    waiting = parked[key] = deque()
                waiting.append(job)
            else:
                self._send(job, key, now)
        if self._idle is not None:
            self._drained()

    def _stale(self, job: ShadowJob) -> None:
        """A copy that waited too long: dropped, and counted as such; the queue holds one
        fewer (the shadow does not take in time what it holds)."""
        self._queued -= 1
        if self._room > self._workers:
            self._room -= 1
        self._count_drop(job[0].model)

    def _send_parked(self, key: tuple[str, str], waiting: deque[ShadowJob]) -> None:
        """Send `key`'s parked copies, in order, while each is under its cap."""
        copies = self._copies
        now = self.clock()
        while waiting and self._in_flight < self._workers and copies.get(key, 0) < waiting[0][9]:
            job = waiting.popleft()
            if job[10] < now:
                self._stale(job)
            else:
                self._send(job, key, now)

    def _target(self, url: str) -> str:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = None
            target = f"{parts.hostname}:{port or (443 if parts.scheme == 'https' else 80)}"
            if len(self._targets) < 4096:  # urls come from the route table: a small set
                self._targets[url] = target
        return target

    def _send(self, job: ShadowJob, key: tuple[str, str], now: float) -> None:
        if job[10] - now > self._half_age and self._room < self._queue_size:
            self._room += 1  # sent well within its bound: the queue may hold one more
        if self.down:
            target = self._target(job[2])
            error_class = self.backoff.held(target)
            if error_class is not None:
                self._queued -= 1
                route, protocol, _, _, _, request_id, input, slices, role, _, _ = job
                self._held(route, role, protocol, request_id, input, slices, target, error_class)
                if self._idle is not None:
                    self._drained()
                return
        self._queued -= 1
        self._copies[key] = self._copies.get(key, 0) + 1
        self._in_flight += 1
        try:
            self._client.post_soon(
                job[2], job[3], job[4], self._timeout, self._answered,
                (job, key, time.time(), time.perf_counter()),
            )  # fmt: skip
        except Exception:
            log.exception("shadow call for %s failed unexpectedly", job[5])
            self._copies[key] -= 1
            self._in_flight -= 1

    def _held(
        self,
        route: Any,
        role: str,
        protocol: Protocol,
        request_id: str,
        input: str | bytes | None,
        slices: dict[str, Any],
        target: str,
        error_class: str,
    ) -> None:
        """A copy not sent (its target is down): counted; logged as the failure that put
        the target down when the target's last such row is `held_row_s` old."""
        self.unreachable += 1
        key = (route.model, role)
        counts = self._unreachable
        counts[key] = counts.get(key, 0) + 1
        now = time.monotonic()
        if now < self._row_due.get(target, 0.0):
            self.unlogged += 1
            return
        self._row_due[target] = now + self.held_row_s
        error = _HELD.get(error_class) or _HELD["connection"]
        job = (route, protocol, "", b"", (), request_id, input, slices, role, 0, 0.0)
        try:
            self._log(job, time.time(), 0.0, None, error)
        except Exception:
            log.exception("shadow call for %s failed unexpectedly", request_id)

    def _connect_failed(self, job: ShadowJob, error: UpstreamError) -> None:
        target = self._target(job[2])
        seconds = self.backoff.failed(target, error.error_class)
        if seconds is not None:
            self._lines.warning(
                "down " + target,
                "mirror target %s is unreachable (%s): copies to it are not sent for %g s, "
                "then longer while it stays so, and are logged as failed (%s) and counted in "
                "coalmine_gateway_shadow_unreachable_total",
                target, error, seconds, error.error_class,
            )  # fmt: skip

    def _reached(self, job: ShadowJob) -> None:
        target = self._target(job[2])
        held = self.backoff.reached(target)
        if held is not None:
            self._lines.warning(
                "up " + target,
                "mirror target %s is reachable again (%d cop%s not sent while it was not)",
                target, held, "y" if held == 1 else "ies",
            )  # fmt: skip

    def _answered(
        self,
        context: tuple[ShadowJob, tuple[str, str], float, float],
        response: UpstreamResponse | None,
        error: BaseException | None,
    ) -> None:
        """A copy's outcome (from the client): logged, then its turn passes on."""
        job, key, ts, start = context
        elapsed = time.perf_counter() - start
        if self._stopped:  # counted as dropped by close()
            return
        self._copies[key] -= 1
        self._in_flight -= 1
        if error is None or isinstance(error, UpstreamError):
            if error is not None and error.unreachable:
                self._connect_failed(job, error)
            elif self.down:
                self._reached(job)
            try:
                self._log(job, ts, elapsed, response, error)
            except Exception:
                log.exception("shadow call for %s failed unexpectedly", job[5])
        else:
            log.error("shadow call for %s failed unexpectedly", job[5], exc_info=error)
        # the next copy of this model and role whose turn it is, then any other
        waiting = self._parked.get(key)
        if waiting:
            self._send_parked(key, waiting)
        if self._queue:
            self._pump()
        if self._idle is not None:
            self._drained()

    def _drained(self) -> None:
        """Tells close(), when it waits, that the last copy is done."""
        idle = self._idle
        if idle is not None and not self._in_flight and not self._queued and not idle.done():
            idle.set_result(None)

    def _log(
        self,
        job: ShadowJob,
        ts: float,
        elapsed: float,
        response: UpstreamResponse | None,
        error: BaseException | None,
    ) -> None:
        route, protocol, _, _, _, request_id, input, slices, role, _, _ = job
        status = 0
        error_class: str | None = None
        answer: bytes | None = None
        header_length: str | None = None
        if isinstance(error, UpstreamError):
            error_class = error.error_class
        elif response is not None:
            status = response.status
            if status >= 500:
                error_class = "http_5xx"
            elif status >= 400:
                error_class = "http_4xx"
            answer = response.body
            if protocol is V2:  # the binary extension's header, read as production reads it
                header_length = response.header(HEADER_LENGTH)
        if role == "baseline":
            metrics, version = route.baseline_metrics, route.stable
        elif role == "paired":
            metrics, version = route.paired_metrics, route.stable
        else:
            metrics, version = route.shadow_metrics, route.shadow
        metrics.observe(elapsed, error_class)
        self._sink.submit(  # the answer is decoded by the log's writer
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
                input,
                slices,
                route.weight_bp,
                route.rollout_id,
            )
        )
