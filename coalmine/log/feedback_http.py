"""`POST /v1/feedback`: hands feedback to a FeedbackStore (`FeedbackEndpoint`, apart from any
HTTP server; `make_feedback_handler` wraps it for aiohttp).

Body: one item `{"request_id", "label"?, "outcomes"?}`, a list of items, or
`{"items": [...]}`. The status says whether the request as a whole was understood; the body
says what happened to each item (207-style, with status 200):

    {"accepted": 2, "errors": [{"index": 2, "request_id": "r9", "error": "unknown request_id",
     "status": "error"}], "results": [...one per item, in order...]}

Malformed JSON or an unexpected shape is a 400, too many items a 413, a store that cannot
be reached a 503; nothing is stored in those cases.

With a feedback token configured (`gateway.feedback_token` or $COALMINE_FEEDBACK_TOKEN), a
request without `Authorization: Bearer <token>` is a 401 and nothing is read: labels decide
whether a candidate is promoted, so whoever may send them is part of the trust model (see
SECURITY.md). The token is compared in constant time (digests of equal length, so not even
its length leaks) and never logged or echoed.

The prediction log is written in batches, so a label sent right after its prediction may
name a request id not yet in the store (by any gateway process). Items reported unknown are
tried once more after `grace_s` (default: twice the log's flush interval) before the error
is returned, so a fast client needs no retry loop; only true unknowns pay the wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from coalmine.log.policy import JsonTooDeep, loads_bounded
from coalmine.log.throttle import ThrottledLog
from coalmine.store.feedback import UNKNOWN_REQUEST_ID, FeedbackStore

__all__ = [
    "MAX_ITEMS", "FeedbackEndpoint", "FeedbackStore", "Reply", "feedback_items",
    "make_feedback_handler",
]  # fmt: skip

log = logging.getLogger(__name__)
_throttled = ThrottledLog(log)  # an unauthenticated endpoint: its clients must not flood the log

MAX_ITEMS = 10_000  # per request: a bigger batch is one transaction too many to hold open

Handler = Callable[[web.Request], Awaitable[web.Response]]

UNAUTHORIZED = Counter(
    "coalmine_feedback_unauthorized", "Feedback requests refused: missing or wrong token"
)


class BadFeedback(ValueError):
    """A feedback request that cannot be read as items."""


def feedback_items(body: Any) -> list[Any]:
    """The list of items in a parsed request body, or BadFeedback saying why not."""
    if isinstance(body, dict):
        items = body["items"] if set(body) == {"items"} else [body]
    else:
        items = body
    if not isinstance(items, list):
        raise BadFeedback('expected an object, a list of objects, or {"items": [...]}')
    if not items:
        raise BadFeedback("no feedback items")
    return items


Reply = tuple[int, dict[str, Any], list[tuple[str, str]]]  # status, JSON body, headers


def _error(status: int, message: str) -> Reply:
    return status, {"error": message}, []


async def _add_with_grace(store: FeedbackStore, items: list[Any], grace_s: float) -> list[Any]:
    """`store.add(items)`, with the items reported unknown tried once more after grace_s."""
    results = await asyncio.to_thread(store.add, items)
    unknown = [i for i, r in enumerate(results) if r.error == UNKNOWN_REQUEST_ID]
    if not unknown or grace_s <= 0:
        return results
    await asyncio.sleep(grace_s)
    retried = await asyncio.to_thread(store.add, [items[i] for i in unknown])
    for i, r in zip(unknown, retried, strict=True):
        results[i] = replace(r, index=i)
    return results


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _presented(authorization: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _unauthorized() -> Reply:
    UNAUTHORIZED.inc()
    status, body, _ = _error(
        401, "feedback needs the feedback token (Authorization: Bearer <token>)"
    )
    return status, body, [("WWW-Authenticate", 'Bearer realm="coalmine-feedback"')]


class FeedbackEndpoint:
    """`POST /v1/feedback` apart from any HTTP server: `refused` checks the token (before
    the body is read), `answer` reads a body; both give (status, JSON body, headers).
    Database work runs in a thread."""

    def __init__(
        self, store: FeedbackStore, grace_s: float = 0.5, token: str | None = None
    ) -> None:
        if token is not None and not token:
            raise ValueError("feedback token: empty; give a token or None (no token required)")
        self._store = store
        self._grace_s = grace_s
        self._expected = _digest(token) if token else None

    def refused(self, authorization: str | None) -> Reply | None:
        """A 401 unless the request carries the token (when one is configured)."""
        if self._expected is None:
            return None
        given = _presented(authorization)
        if given is None or not hmac.compare_digest(_digest(given), self._expected):
            return _unauthorized()
        return None

    async def answer(self, raw: bytes) -> Reply:
        try:
            body = loads_bounded(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"malformed JSON: {exc}")
        except JsonTooDeep as exc:
            _throttled.warning("too_deep", "feedback refused: %s", exc)
            return _error(400, str(exc))
        try:
            items = feedback_items(body)
        except BadFeedback as exc:
            return _error(400, str(exc))
        if len(items) > MAX_ITEMS:
            return _error(413, f"{len(items)} items; at most {MAX_ITEMS} per request")
        try:
            results = await _add_with_grace(self._store, items, self._grace_s)
        except Exception:
            log.exception("feedback store failed")
            return _error(503, "feedback store unavailable; nothing was stored, retry later")
        out = [r.as_dict() for r in results]
        accepted = {
            "accepted": sum(r.ok for r in results),
            "errors": [o for o, r in zip(out, results, strict=True) if not r.ok],
            "results": out,
        }
        return 200, accepted, []


def make_feedback_handler(
    store: FeedbackStore, grace_s: float = 0.5, token: str | None = None
) -> Handler:
    """`FeedbackEndpoint` as an aiohttp handler (for an aiohttp application).

    With `token`, only requests carrying it as a bearer token are read (401 otherwise).
    """
    endpoint = FeedbackEndpoint(store, grace_s, token)

    async def handle_feedback(request: web.Request) -> web.Response:
        reply = endpoint.refused(request.headers.get("Authorization"))
        if reply is None:
            reply = await endpoint.answer(await request.read())
        status, body, headers = reply
        return web.json_response(body, status=status, headers=headers or None)

    return handle_feedback
