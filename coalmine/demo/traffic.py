"""The demo's users: open-loop requests to the gateway and ground truth that arrives late.

Each user lives in one region and keeps one id (so the gateway's sticky split holds), and
sends the pool's digits from that region through the KServe V1 route with `X-User-Id` and
`X-Region` headers. Arrivals are Poisson at `rate` per second (open loop: a slow gateway
makes requests queue, it does not slow the users down, up to `concurrency` in flight).
A `label_share` of the answered requests gets its true label POSTed to `/v1/feedback`
`label_delay_s` later, in batches; an item the gateway does not know yet (its log is written
in batches) is retried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from coalmine.demo.data import REGIONS, DemoData

__all__ = ["TrafficConfig", "TrafficGenerator", "TrafficStats"]

UNKNOWN_RETRY_S = 1.5


@dataclass
class TrafficConfig:
    gateway_url: str
    model: str = "digits"
    rate: float = 100.0  # requests per second
    users: int = 400
    label_share: float = 0.7
    label_delay_s: float = 2.0
    concurrency: int = 64
    seed: int = 0
    timeout_s: float = 10.0


@dataclass
class TrafficStats:
    sent: int = 0
    answered: int = 0  # 2xx
    failed: int = 0  # non-2xx
    transport_errors: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_region: Counter[str] = field(default_factory=Counter)
    labels_sent: int = 0
    labels_accepted: int = 0
    labels_rejected: int = 0
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=1000))


class TrafficGenerator:
    def __init__(self, config: TrafficConfig, data: DemoData) -> None:
        self.config = config
        self.data = data
        self.stats = TrafficStats()
        self._rng = np.random.default_rng(config.seed)
        shares = data.region_shares()
        p = np.array([shares[r] for r in REGIONS])
        self._user_region = self._rng.choice(len(REGIONS), size=config.users, p=p / p.sum())
        self._pools = [data.pool_indices(r) for r in REGIONS]
        self._labels: deque[tuple[float, str, int, bool]] = deque()  # due, id, label, retried
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def rate(self) -> float:
        return self.config.rate

    @rate.setter
    def rate(self, value: float) -> None:
        self.config.rate = max(0.1, value)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; then wait for requests in flight (labels still due are
        dropped: a demo that ends does not wait for tomorrow's ground truth)."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.config.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            feedback = asyncio.create_task(self._feedback_loop(session, stop))
            gate = asyncio.Semaphore(self.config.concurrency)
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += float(self._rng.exponential(1.0 / self.config.rate))
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                else:
                    await asyncio.sleep(0)  # let answers in when far behind schedule
                await gate.acquire()
                task = asyncio.create_task(self._one(session, gate))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=self.config.timeout_s)
            feedback.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feedback

    def _request(self) -> tuple[str, str, list[float], int]:
        user = int(self._rng.integers(self.config.users))
        region_index = int(self._user_region[user])
        pool = self._pools[region_index]
        row = int(pool[int(self._rng.integers(len(pool)))])
        features = [float(v) for v in self.data.x_pool[row]]
        return f"user-{user:04d}", REGIONS[region_index], features, int(self.data.y_pool[row])

    async def _one(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        try:
            user, region, features, label = self._request()
            request_id = uuid.uuid4().hex
            url = f"{self.config.gateway_url}/v1/models/{self.config.model}:predict"
            headers = {"X-User-Id": user, "X-Region": region, "X-Request-ID": request_id}
            self.stats.sent += 1
            self.stats.by_region[region] += 1
            try:
                async with session.post(
                    url, json={"instances": [features]}, headers=headers
                ) as resp:
                    await resp.read()
                    status = resp.status
                    version = resp.headers.get("X-Model-Version", "?")
                    request_id = resp.headers.get("X-Request-ID", request_id)
            except (aiohttp.ClientError, TimeoutError):
                self.stats.transport_errors += 1
                return
            self.stats.by_version[version] += 1
            if 200 <= status < 300:
                self.stats.answered += 1
                self.stats.recent_ids.append(request_id)
                if self._rng.random() < self.config.label_share:
                    due = time.monotonic() + self.config.label_delay_s
                    self._labels.append((due, request_id, label, False))
            else:
                self.stats.failed += 1
        finally:
            gate.release()

    async def _feedback_loop(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        url = f"{self.config.gateway_url}/v1/feedback"
        while not stop.is_set():
            await asyncio.sleep(0.25)
            now = time.monotonic()
            batch: list[tuple[float, str, int, bool]] = []
            # Labels are queued in due order, except retries (appended later): scan them all.
            keep: deque[tuple[float, str, int, bool]] = deque()
            while self._labels:
                item = self._labels.popleft()
                (batch if item[0] <= now else keep).append(item)
            self._labels.extendleft(reversed(keep))
            if batch:
                await self._post_labels(session, url, batch)

    async def _post_labels(
        self, session: aiohttp.ClientSession, url: str, batch: list[tuple[float, str, int, bool]]
    ) -> None:
        items = [{"request_id": rid, "label": label} for _, rid, label, _ in batch]
        self.stats.labels_sent += len(items)
        try:
            async with session.post(url, json={"items": items}) as resp:
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.stats.labels_rejected += len(items)
            return
        if not isinstance(body, dict):
            self.stats.labels_rejected += len(items)
            return
        errors = body.get("errors") or []
        self.stats.labels_accepted += int(body.get("accepted", 0))
        retry_at = time.monotonic() + UNKNOWN_RETRY_S
        for error in errors:
            index = error.get("index") if isinstance(error, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(batch):
                continue
            _, rid, label, retried = batch[index]
            if not retried and "unknown" in str(error.get("error", "")):
                self.stats.labels_sent -= 1  # counted again when it is re-sent
                self._labels.append((retry_at, rid, label, True))
            else:
                self.stats.labels_rejected += 1
