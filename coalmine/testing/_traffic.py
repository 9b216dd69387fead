"""`Traffic`: requests through the gateway at a steady rate, with their true labels fed back."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["Traffic"]


def _plain(value: Any) -> Any:
    """numpy rows and scalars as JSON-ready Python values."""
    return value.tolist() if hasattr(value, "tolist") else value


class Traffic:
    """Sends rows of `X` (picked at random, seeded) to `model` through the gateway, `rate`
    requests a second from a few threads, each with a random user id in `user_header` (for
    sticky routing). With labels `y`, each answered request's true label is POSTed to the
    gateway's `/v1/feedback` about `label_delay` seconds later, as a labelling job would.

        with Traffic(cm.gateway_url, "iris", X, y, rate=100) as traffic:
            ...  # start a rollout and wait for it
        assert traffic.statuses[200] == traffic.sent

    Counters (read them while it runs or after `stop()`): `sent`, `statuses` (HTTP status
    -> count; 0 = no answer), `versions` (the gateway's X-Model-Version -> count), `labelled`
    (labels the gateway accepted) and `label_errors`.

    `feedback_token`: the gateway's feedback token, when it requires one.
    """

    def __init__(
        self,
        gateway_url: str,
        model: str,
        X: Sequence[Any],
        y: Sequence[Any] | None = None,
        *,
        rate: float = 100.0,
        label_delay: float = 0.5,
        user_header: str = "X-User-Id",
        users: int = 10_000,
        workers: int = 8,
        seed: int = 0,
        timeout: float = 10.0,
        feedback_token: str | None = None,
    ) -> None:
        if len(X) == 0 or (y is not None and len(y) != len(X)):
            raise ValueError("X must be non-empty and y, if given, as long as X")
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.predict_url = f"{gateway_url.rstrip('/')}/v1/models/{model}:predict"
        self.feedback_url = f"{gateway_url.rstrip('/')}/v1/feedback"
        # the gateway's feedback token, when it requires one (gateway.feedback_token)
        self._feedback_headers = (
            {"Authorization": f"Bearer {feedback_token}"} if feedback_token else {}
        )
        self.rows = [_plain(x) for x in X]
        self.labels = None if y is None else [_plain(v) for v in y]
        self.rate = rate
        self.label_delay = label_delay
        self.user_header = user_header
        self.users = users
        self.timeout = timeout
        self.sent = 0
        self.labelled = 0
        self.label_errors = 0
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._due: list[tuple[float, str, Any, int]] = []  # (when, request id, label, tries)
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(workers * 2)  # a slow gateway is not flooded
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="coalmine-traffic")
        self._threads: list[threading.Thread] = []
        self._http: httpx.Client | None = None

    def start(self) -> Traffic:
        import httpx  # the SDK's HTTP client, thread-safe

        if self._threads:
            raise RuntimeError("already started")
        self._http = httpx.Client(timeout=self.timeout)
        for target in (self._send_loop, self._label_loop):
            # daemon: a test that never calls stop() must not hang the interpreter at exit
            thread = threading.Thread(
                target=target, name=f"coalmine-traffic-{target.__name__}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop sending, wait for answers in flight, send the labels still due, close."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self._pool.shutdown(wait=True)
        self._send_labels(flush=True)
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- sending ----------------------------------------------------------------------------

    def _send_loop(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.1):
                index = self._rng.randrange(len(self.rows))
                user = f"u{self._rng.randrange(self.users)}"
                self._pool.submit(self._one, index, user)
            next_at = max(next_at + period, time.monotonic() - 1.0)  # no burst after a stall
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one(self, index: int, user: str) -> None:
        import httpx

        assert self._http is not None
        request_id = uuid.uuid4().hex
        headers = {"X-Request-ID": request_id, self.user_header: user}
        try:
            with self._lock:
                self.sent += 1
            try:
                response = self._http.post(
                    self.predict_url, json={"instances": [self.rows[index]]}, headers=headers
                )
            except httpx.HTTPError:
                with self._lock:
                    self.statuses[0] += 1
                return
            with self._lock:
                self.statuses[response.status_code] += 1
                self.versions[response.headers.get("X-Model-Version", "?")] += 1
                if response.status_code == 200 and self.labels is not None:
                    when = time.monotonic() + self.label_delay
                    self._due.append((when, request_id, self.labels[index], 0))
        finally:
            self._slots.release()

    # -- labels -----------------------------------------------------------------------------

    def _label_loop(self) -> None:
        while not self._stop.wait(0.2):
            self._send_labels()

    def _send_labels(self, flush: bool = False) -> None:
        import httpx

        now = time.monotonic()
        with self._lock:
            due = [d for d in self._due if flush or d[0] <= now]
            self._due = [d for d in self._due if not (flush or d[0] <= now)]
        if not due or self._http is None:
            return
        items = [{"request_id": rid, "label": label} for _, rid, label, _ in due]
        try:
            response = self._http.post(
                self.feedback_url, json={"items": items}, headers=self._feedback_headers
            )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        if body is None:  # the gateway did not take them: try the whole batch again
            self._retry(due, range(len(due)), now)
            return
        failed = [e.get("index") for e in body.get("errors") or [] if isinstance(e, dict)]
        with self._lock:
            self.labelled += int(body.get("accepted", 0))
        self._retry(due, [i for i in failed if isinstance(i, int) and 0 <= i < len(due)], now)

    def _retry(self, due: list[tuple[float, str, Any, int]], indices: Any, now: float) -> None:
        # the prediction log is written in batches: an id may not be in the store yet
        with self._lock:
            for i in indices:
                _, rid, label, tries = due[i]
                if tries < 3 and not self._stop.is_set():
                    self._due.append((now + 0.5, rid, label, tries + 1))
                else:
                    self.label_errors += 1
