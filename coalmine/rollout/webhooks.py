"""Webhooks: a JSON POST per rollout transition, HMAC-SHA256 signed, durable, retried.

Deliveries are rows of the outbox table (coalmine.rollout.outbox), written in the same
transaction as the transition, so a controller killed between the commit and the POST (or
in the middle of the retries) loses nothing: the next sender to start, in this process or
another, delivers them. `WebhookSender` is that sender: its own asyncio task polls due rows
in small batches (database work in threads, so the controller loop never waits on it),
claims each with a compare-and-set lease, POSTs it and records the result:

- 2xx: delivered;
- 4xx other than 408/429: rejected (retrying will not help);
- anything else (5xx, 408, 429, connection error, timeout): retried with exponential
  backoff, and failed after `max_attempts`.

With a leader lease (a controller's `Leader`, set as `sender.leader`), only the leader
sends: a follower's sender idles, a claim checks the lease in its own transaction, and a
sender that stops believing it leads before its POST gives the row back unsent.

At-least-once: every attempt of one row carries the same `X-Coalmine-Delivery` id, so a
receiver drops repeats. Signature: header `X-Coalmine-Signature: sha256=<hex>` where hex is
HMAC-SHA256(secret, body); receivers check it with `verify_signature` (constant time). A
webhook without its own secret is signed with $COALMINE_WEBHOOK_SECRET at send time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from coalmine.rollout.leader import Leader
from coalmine.rollout.outbox import DELIVERED, FAILED, REJECTED, Outbox, OutboxRow

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookSender",
    "backoff_delay",
    "loggable_url",
    "sign",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Coalmine-Signature"
DELIVERY_HEADER = "X-Coalmine-Delivery"
DELIVERIES = Counter(
    "coalmine_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered, rejected, retried, failed)",
    ["result"],
)
PENDING = Gauge(
    "coalmine_webhook_deliveries_pending", "Webhook deliveries stored and not yet finished"
)


def loggable_url(url: str) -> str:
    """`url` as a log line may show it: scheme, host and port. A webhook URL's path, query or
    userinfo may be its secret (incoming-webhook paths of chat services are)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(unparsable url)"
    if not parts.scheme or not host:
        return "(unparsable url)"
    where = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return where + ("/…" if parts.path.strip("/") or parts.query or parts.fragment else "")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def backoff_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Wait after the `attempts`-th failed attempt (1, 2, ...): base, 2*base, 4*base, capped."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


def _retryable(status: int) -> bool:
    return not (400 <= status < 500) or status in (408, 429)


class WebhookSender:
    """Delivers the outbox. `start()` runs it as a task; `close()` drains briefly and stops.

    Several senders (controllers) may share one store: a row is sent by whoever claims it,
    and a claim is a lease (`lease_s`) so a sender that died mid-send is replaced.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        poll_s: float = 0.5,
        batch: int = 20,
        max_attempts: int = 10,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        timeout_s: float = 5.0,
        lease_s: float | None = None,
        retention_s: float = 7 * 86_400.0,
        clock: Callable[[], float] = time.time,
        leader: Leader | None = None,
    ) -> None:
        self.outbox = Outbox(engine)
        self.leader = leader  # set: send only while it holds the lease
        self.poll_s = poll_s
        self.batch = batch
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        # longer than one POST can take (timeout_s) plus recording it, so a live sender's
        # claim never expires under it; short enough that a dead sender's rows resume soon
        self.lease_s = lease_s if lease_s is not None else max(10.0, 3 * timeout_s)
        self.clock = clock
        # finished deliveries are kept this long (for the API's delivery status), then pruned
        self.retention_s = retention_s
        self._next_prune = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._leases: dict[int, float] = {}  # row id -> leased until, while sending
        self.attempts_made = 0  # rows this sender claimed and tried (for logs and tests)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="coalmine-webhooks")

    def wake(self) -> None:
        """Look at the outbox now (a transition was just committed) instead of at the
        next poll. Safe to call from any thread; a no-op while not started."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # its loop closed in between
                loop.call_soon_threadsafe(self._wake.set)

    async def close(self, drain_timeout_s: float = 2.0) -> None:
        """Send what is due for up to `drain_timeout_s`, then stop. Whatever is left stays
        in the store for the next sender; leases held are given back so it need not wait."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s)
        except TimeoutError:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._closing = False
        self._loop = None
        leases, self._leases = self._leases, {}
        for row_id, until in leases.items():
            try:
                await asyncio.to_thread(self.outbox.release, row_id, until, self.clock())
            except Exception:
                log.exception("webhook delivery %s: could not release its lease", row_id)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_once()
            except Exception:  # a store hiccup: log it and poll again
                log.exception("webhook sender pass failed")
                busy = 0
            if busy:
                continue  # rows queued behind the ones just sent may be due now
            if self._closing:
                return  # drained: nothing more is due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """One pass: claim and send up to `batch` due rows; returns how many were sent."""
        if self.leader is not None and not self.leader.leading:
            return 0
        rows = await asyncio.to_thread(self.outbox.due, self.clock(), self.batch)
        sent = 0
        if rows:
            session = await self._client()
            results = await asyncio.gather(
                *(self._claim_and_send(session, row) for row in rows), return_exceptions=True
            )
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("webhook delivery %s crashed: %r", row.id, result)
                elif result:
                    sent += 1
        PENDING.set(await asyncio.to_thread(self.outbox.pending_count))
        now = self.clock()
        if now >= self._next_prune:  # hourly is plenty: a few rows per transition
            self._next_prune = now + 3600.0
            await asyncio.to_thread(self.outbox.prune, now - self.retention_s)
        return sent

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _claim_and_send(self, session: aiohttp.ClientSession, row: OutboxRow) -> bool:
        where = loggable_url(row.url)
        until = self.clock() + self.lease_s
        fence = None if self.leader is None else self.leader.fence()
        if self.leader is not None and fence is None:
            return False  # not leading (any more)
        if not await asyncio.to_thread(self.outbox.claim, row, until, fence):
            return False  # another sender has it
        if self.leader is not None and not self.leader.leading:
            # paused past our lease between the claim and here: the successor sends it
            await asyncio.to_thread(self.outbox.release, row.id, until, self.clock())
            return False
        self._leases[row.id] = until  # cancelled mid-send, close() gives it back
        self.attempts_made += 1
        outcome, error = await self._post(session, row)
        if error:  # an exception's text may quote the URL it failed on
            error = error.replace(row.url, where)
        self._leases.pop(row.id, None)
        now = self.clock()
        if outcome == DELIVERED:
            await asyncio.to_thread(self.outbox.finish, row.id, DELIVERED, now)
        elif outcome == REJECTED:
            log.warning("webhook %s rejected delivery %s: %s", where, row.id, error)
            await asyncio.to_thread(self.outbox.finish, row.id, REJECTED, now, error)
        elif row.attempts + 1 >= self.max_attempts:
            outcome = FAILED
            log.warning(
                "webhook %s: delivery %s failed after %d attempts: %s",
                where,
                row.id,
                row.attempts + 1,
                error,
            )
            await asyncio.to_thread(self.outbox.finish, row.id, FAILED, now, error)
        else:
            outcome = "retried"
            delay = backoff_delay(row.attempts + 1, self.backoff_s, self.max_backoff_s)
            log.info("webhook %s: delivery %s retries in %.1fs: %s", where, row.id, delay, error)
            await asyncio.to_thread(self.outbox.retry_at, row.id, now + delay, str(error))
        DELIVERIES.labels(outcome).inc()
        return True

    async def _post(self, session: aiohttp.ClientSession, row: OutboxRow) -> tuple[str, str | None]:
        body = row.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "coalmine-webhook",
            DELIVERY_HEADER: row.delivery_id,
            "X-Coalmine-Event": row.kind,
        }
        secret = row.secret or os.environ.get("COALMINE_WEBHOOK_SECRET")
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        try:
            async with session.post(row.url, data=body, headers=headers) as resp:
                if resp.status < 300:
                    return DELIVERED, None
                error = f"HTTP {resp.status}"
                return ("retry" if _retryable(resp.status) else REJECTED), error
        except Exception as exc:  # network, timeout, or anything odd: count it as an attempt
            return "retry", f"{type(exc).__name__}: {exc}"[:300]
