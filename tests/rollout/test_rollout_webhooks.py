"""Webhooks: signed, retried with backoff on failure, never blocking the caller."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from coalmine.rollout.webhooks import SIGNATURE_HEADER, WebhookNotifier, sign, verify_signature


async def _receiver(fail_first: int) -> tuple[web.AppRunner, str, list[tuple[float, bytes, str]]]:
    got: list[tuple[float, bytes, str]] = []
    calls = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        calls["n"] += 1
        body = await request.read()
        if calls["n"] <= fail_first:
            return web.Response(status=503)
        got.append((time.monotonic(), body, request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook", got


async def test_a_failing_receiver_gets_the_delivery_on_a_retry() -> None:
    runner, url, got = await _receiver(fail_first=2)
    notifier = WebhookNotifier(backoff_s=0.05)
    notifier.start()
    try:
        started = time.monotonic()
        assert notifier.notify(url, "k", {"kind": "advance", "rollout_id": 3})
        assert time.monotonic() - started < 0.05  # queued, not sent inline
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        [(_, body, signature)] = got
        assert json.loads(body) == {"kind": "advance", "rollout_id": 3}
        assert verify_signature("k", body, signature)
        assert not verify_signature("k", body + b" ", signature)
    finally:
        await notifier.close()
        await runner.cleanup()


async def test_a_dead_receiver_does_not_block_and_a_full_queue_drops() -> None:
    notifier = WebhookNotifier(queue_size=2, attempts=2, backoff_s=0.01, timeout_s=0.5)
    # not started: nothing drains the queue
    assert notifier.notify("http://127.0.0.1:9/hook", None, {"kind": "a"})
    assert notifier.notify("http://127.0.0.1:9/hook", None, {"kind": "b"})
    assert not notifier.notify("http://127.0.0.1:9/hook", None, {"kind": "c"})
    notifier.start()
    await notifier.close(drain_timeout_s=5)  # connection refused twice each, then given up
    assert notifier.queue.empty()


def test_signature_format() -> None:
    assert sign("s", b"{}").startswith("sha256=") and len(sign("s", b"{}")) == 7 + 64
    assert not verify_signature("s", b"{}", None)
