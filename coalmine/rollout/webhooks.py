"""Webhooks: a JSON POST per rollout transition, HMAC-SHA256 signed, retried with backoff.

Deliveries go through a bounded in-memory queue drained by a background task, so a slow or
dead receiver never delays the controller; a full queue drops the delivery and counts it.

Signature: header `X-Coalmine-Signature: sha256=<hex>` where hex is
HMAC-SHA256(secret, body). Receivers check it with `verify_signature` (constant time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter

__all__ = ["SIGNATURE_HEADER", "Delivery", "WebhookNotifier", "sign", "verify_signature"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Coalmine-Signature"
DELIVERIES = Counter(
    "coalmine_webhook_deliveries_total", "Webhook deliveries by result", ["result"]
)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    secret: str | None
    payload: dict[str, Any]


class WebhookNotifier:
    """Queue deliveries with `notify`; `run` (a task) sends them; `close` drains and stops."""

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def notify(self, url: str, secret: str | None, payload: dict[str, Any]) -> bool:
        """Queue one delivery; never blocks. False when the queue was full (dropped)."""
        secret = secret or os.environ.get("COALMINE_WEBHOOK_SECRET")
        try:
            self.queue.put_nowait(Delivery(url, secret, payload))
        except asyncio.QueueFull:
            DELIVERIES.labels("dropped").inc()
            log.warning("webhook queue full; dropped a delivery to %s", url)
            return False
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="coalmine-webhooks")

    async def close(self, drain_timeout_s: float = 5.0) -> None:
        """Give queued deliveries a bounded time to go out, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), drain_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                delivery = await self.queue.get()
                try:
                    await self._deliver(session, delivery)
                except Exception:  # never let one bad delivery stop the worker
                    log.exception("webhook delivery to %s failed", delivery.url)
                finally:
                    self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, d: Delivery) -> None:
        body = json.dumps(d.payload, default=str, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "coalmine-webhook",
            "X-Coalmine-Delivery": uuid.uuid4().hex,
            "X-Coalmine-Event": str(d.payload.get("kind", "")),
        }
        if d.secret:
            headers[SIGNATURE_HEADER] = sign(d.secret, body)
        for attempt in range(self.attempts):
            try:
                async with session.post(d.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        DELIVERIES.labels("delivered").inc()
                        return
                    # a 4xx other than 408/429 will not get better by retrying
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        DELIVERIES.labels("rejected").inc()
                        log.warning("webhook %s rejected with %s", d.url, resp.status)
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook %s attempt %d failed: %s", d.url, attempt + 1, exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        DELIVERIES.labels("failed").inc()
        log.warning("webhook %s failed after %d attempts", d.url, self.attempts)
