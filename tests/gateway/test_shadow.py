"""Shadow isolation: a slow, failing or unreachable shadow never touches production."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest

from coalmine.store.routes import RouteRepository
from tests.gateway.conftest import RunningGateway, StartGateway, Upstream, free_port, make_config

V1 = "/v1/models/m:predict"


async def _load(gw: RunningGateway, n: int, concurrency: int = 8) -> tuple[list[int], float]:
    """n requests, `concurrency` at a time; the statuses and the p99 latency in seconds."""
    latencies: list[float] = []
    statuses: list[int] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            start = time.perf_counter()
            status, headers, _ = await gw.post(V1, headers={"X-User-Id": f"u{i}"})
            latencies.append(time.perf_counter() - start)
            statuses.append(status)
            assert headers["X-Model-Version"] == "v1"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    return statuses, latencies[int(0.99 * (len(latencies) - 1))]


@pytest.mark.parametrize("shadow_mode", ["slow", "error", "down"])
async def test_shadow_never_changes_production_status_or_latency(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway, shadow_mode: str
) -> None:
    upstreams["v3"].mode = "ok" if shadow_mode == "down" else shadow_mode
    shadow_url = f"http://127.0.0.1:{free_port()}" if shadow_mode == "down" else upstreams["v3"].url
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": shadow_url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 32, "workers": 4, "timeout_s": 1.0}},
    )
    gw = await start_gateway(config)
    n = 300
    # the same gateway with the mirror off, then on: a relative comparison on this machine
    RouteRepository(gw.engine).set_route("m", mirror_bp=0)
    await asyncio.sleep(0.5)
    base_statuses, base_p99 = await _load(gw, n)
    RouteRepository(gw.engine).set_route("m", mirror_bp=10_000)
    await asyncio.sleep(0.5)
    statuses, p99 = await _load(gw, n)

    assert base_statuses == [200] * n
    assert statuses == [200] * n
    # generous (the machine is shared): a slow shadow leaking into the request path would
    # add its 1-2 s to the p99
    assert p99 <= 3 * base_p99 + 0.25, (p99, base_p99)

    mirror = gw.runner.gateway.mirror
    await gw.stop()
    rows = gw.rows()
    shadow_rows = [r for r in rows if r.role == "shadow"]
    assert len([r for r in rows if r.role == "stable"]) == 2 * n
    # every copy is logged, or counted as dropped, or (a dead shadow's, held back by the
    # mirror's backoff) counted as unreachable: never silently lost
    assert len(shadow_rows) + mirror.dropped + mirror.unlogged == n
    expected = {"slow": "timeout", "error": "http_5xx", "down": "connection"}[shadow_mode]
    assert shadow_rows and all(r.error_class == expected for r in shadow_rows)
    if shadow_mode == "slow":
        assert mirror.dropped > 0  # 4 workers x 1 s cannot keep up: the queue overflowed


async def _until_seen(upstream: Upstream, n: int) -> None:
    async with asyncio.timeout(10):
        while len(upstream.seen) < n:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("strip", [None, []])
async def test_mirror_copies_leave_the_users_credentials_out(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    strip: list[str] | None,
) -> None:
    shadow: dict[str, object] = {} if strip is None else {"strip_headers": strip}
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": upstreams["v3"].url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": shadow},
    )
    gw = await start_gateway(config)
    credentials = {"Authorization": "Bearer user-secret", "Cookie": "session=s3cret"}
    status, _, _ = await gw.post(
        V1, headers={**credentials, "X-Api-Key": "k-123", "X-User-Id": "u-7"}
    )
    assert status == 200
    await _until_seen(upstreams["v3"], 1)
    production = upstreams["v1"].seen[0]["headers"]
    copy = upstreams["v3"].seen[0]["headers"]
    assert production["Authorization"] == "Bearer user-secret"
    assert production["Cookie"] == "session=s3cret"
    assert copy["X-User-Id"] == "u-7" and copy["X-Shadow"] == "1"
    if strip is None:  # the default: no credentials reach the shadow
        assert not {"Authorization", "Cookie", "X-Api-Key"} & set(copy)
    else:  # configured to forward everything
        assert copy["Authorization"] == "Bearer user-secret"
        assert copy["Cookie"] == "session=s3cret"


async def test_copies_still_queued_at_shutdown_are_counted_in_the_log(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstreams["v3"].mode, upstreams["v3"].delay_s = "slow", 30.0
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": upstreams["v3"].url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 32, "workers": 1, "timeout_s": 30.0}},
    )
    gw = await start_gateway(config)
    for i in range(6):
        status, _, _ = await gw.post(V1, headers={"X-User-Id": f"u{i}"})
        assert status == 200
    await _until_seen(upstreams["v3"], 1)  # the one worker is stuck on the first copy
    mirror = gw.runner.gateway.mirror
    caplog.set_level(logging.WARNING, logger="coalmine.gateway.mirror")
    await gw.stop()
    assert mirror.dropped == 6  # five queued, one cancelled mid-call
    lines = [r.getMessage() for r in caplog.records if r.name == "coalmine.gateway.mirror"]
    assert any("mirror stopped with 5 copies still queued" in line for line in lines), lines


async def test_copies_dropped_by_a_full_queue_are_counted_on_metrics(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v3"].mode, upstreams["v3"].delay_s = "slow", 5.0  # a hung shadow
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": upstreams["v3"].url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 2, "workers": 1, "timeout_s": 5.0}},
    )
    gw = await start_gateway(config)
    pattern = re.compile(r'^coalmine_gateway_shadow_drops_total\{model="m"\} (\S+)$', re.M)

    async def drops() -> float:
        async with gw.session.get(gw.url + "/metrics") as resp:
            found = pattern.search(await resp.text())
        return float(found.group(1)) if found else 0.0

    before = await drops()
    for i in range(6):
        status, _, _ = await gw.post(V1, headers={"X-User-Id": f"u{i}"})
        assert status == 200
    # the first copy in flight, the next two queued, the other three dropped and counted
    mirror = gw.runner.gateway.mirror
    assert mirror.dropped == 3
    assert await drops() - before == 3
    await gw.stop()
