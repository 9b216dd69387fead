"""A dead shadow (nothing listens on its port) is left alone a while (issue 12).

Every mirror copy to it used to try a new connection: about as much CPU per request as a
live shadow, for nothing. Now, after one refused connect, copies to that host:port are not
sent for a backoff (counted; one every `held_row_s` logged as failed), and the first copy
after it goes out and finds the shadow again once something listens. The production path has no such
backoff: its calls go out as they come.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from aiohttp import web

from coalmine.gateway.server import seed_routes
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.gateway.conftest import (
    RunningGateway,
    StartGateway,
    Upstream,
    free_port,
    make_config,
)

V1 = "/v1/models/m:predict"
CLIENTS = ("httptools", "aiohttp")


@pytest.fixture
def server() -> None:
    """The mirror does not depend on the data plane's server: the default one only."""
    return None


async def _listen(upstream: Upstream, port: int) -> None:
    """`upstream` started on `port` (where the shadow's URL points)."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", upstream.handle)
    upstream.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await upstream.runner.setup()
    await web.TCPSite(upstream.runner, "127.0.0.1", port).start()


async def _shadow_rows(gw: RunningGateway, n: int) -> list[object]:
    async with asyncio.timeout(10):
        while True:
            rows = [r for r in gw.rows() if r.role == "shadow"]
            if len(rows) >= n:
                return rows
            await asyncio.sleep(0.02)


async def _unreachable(gw: RunningGateway) -> float:
    async with gw.session.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(
        r'^coalmine_gateway_shadow_unreachable_total\{model="m",role="shadow"\} (\S+)$',
        text,
        re.M,
    )
    return float(found.group(1)) if found else 0.0


async def _post(gw: RunningGateway, request_id: str) -> None:
    status, headers, body = await gw.post(V1, headers={"X-Request-ID": request_id})
    assert status == 200 and headers["X-Model-Version"] == "v1"  # production unaffected
    assert b"label-v1" in body


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_dead_shadow_is_not_called_within_its_backoff_and_found_again_after(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    client: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "coalmine.gateway.mirror")
    port = free_port()  # nothing listens there yet
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": f"http://127.0.0.1:{port}"},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"upstream_client": client, "shadow": {"timeout_s": 2.0}},
    )
    gw = await start_gateway(config)
    mirror = gw.runner.gateway.mirror
    mirror.backoff.first_s = 1.0  # long enough for the next copies to fall within it
    mirror.held_row_s = 60.0  # of the held copies, only the first is logged
    before = await _unreachable(gw)

    await _post(gw, "r0")  # its copy is refused: the shadow is down
    [row] = await _shadow_rows(gw, 1)
    assert (row.request_id, row.status, row.error_class) == ("r0", 0, "connection")
    assert mirror.backoff

    shadow = Upstream("v3")
    await _listen(shadow, port)  # the shadow is up again, but within the backoff
    try:
        for i in range(1, 6):
            await _post(gw, f"r{i}")
        rows = await _shadow_rows(gw, 2)
        async with asyncio.timeout(10):
            while mirror.unreachable < 5:
                await asyncio.sleep(0.02)
        # not sent (the shadow saw none of them), counted, the first logged as failed
        assert shadow.seen == []
        assert [(r.request_id, r.status, r.error_class) for r in rows] == [
            ("r0", 0, "connection"),
            ("r1", 0, "connection"),
        ]
        assert (mirror.unreachable, mirror.unlogged) == (5, 4)
        assert await _unreachable(gw) - before == 5

        await asyncio.sleep(1.1)  # the backoff is over: the next copy goes out and gets in
        await _post(gw, "r6")
        rows = await _shadow_rows(gw, 3)
        assert (rows[2].request_id, rows[2].status, rows[2].error_class) == ("r6", 200, None)
        assert not mirror.backoff  # back: the following copies all go out
        for i in range(7, 10):
            await _post(gw, f"r{i}")
        rows = await _shadow_rows(gw, 6)
        assert [r.status for r in rows[2:]] == [200] * 4
        assert len(shadow.seen) == 4
        assert mirror.unreachable == 5
    finally:
        await gw.stop()
        await shadow.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "coalmine.gateway.mirror"]
    target = f"127.0.0.1:{port}"
    assert sum(f"mirror target {target} is unreachable" in line for line in lines) == 1
    assert sum(f"mirror target {target} is reachable again" in line for line in lines) == 1


@pytest.mark.parametrize("client", CLIENTS)
async def test_production_calls_are_not_held_back_after_a_refused_connect(
    tmp_path: Path, start_gateway: StartGateway, client: str
) -> None:
    port = free_port()  # the stable version is down, then up: its next call goes out at once
    config = make_config(
        tmp_path, {"v1": f"http://127.0.0.1:{port}"}, gateway={"upstream_client": client}
    )
    gw = await start_gateway(config)
    status, _, _ = await gw.post(V1)
    assert status == 502
    stable = Upstream("v1")
    await _listen(stable, port)
    try:
        for i in range(3):
            await _post(gw, f"p{i}")
        assert len(stable.seen) == 3
    finally:
        await gw.stop()
        await stable.stop()


async def test_a_dead_shadow_is_judged_failing_not_passed_on_no_data(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    from coalmine.analysis.criteria import Criterion
    from coalmine.analysis.engine import Evaluator

    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": f"http://127.0.0.1:{free_port()}"},
        routing={"shadow": "v3", "mirror_share": 100},
    )
    gw = await start_gateway(config)
    mirror = gw.runner.gateway.mirror
    mirror.held_row_s = 0.001  # the rows of a longer run in a short test (0.1 s by default)
    for i in range(300):
        await _post(gw, f"r{i}")
    await gw.stop()  # flush the log
    shadow = [r for r in gw.rows() if r.role == "shadow"]
    # most copies were held back unlogged, but the shadow's rows are all failures
    assert mirror.unlogged > 0 and len(shadow) + mirror.unlogged == 300
    assert shadow and all(r.status == 0 and r.error_class == "connection" for r in shadow)
    ev = Evaluator(
        gw.engine, model="m", candidate="v3", baseline="v1", mode="shadow",
        criteria=[Criterion.model_validate({"metric": "error_rate"})],
    )  # fmt: skip
    [errors] = [r for r in ev.evaluate().results if r.slice is None]
    assert errors.n_candidate == len(shadow)
    assert errors.verdict.value == "FAIL", (errors.verdict, errors.n_candidate)


async def test_a_dead_shadows_copies_are_held_not_dropped_when_the_queue_is_full(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    """A copy to a target that is down never takes a place in the queue, so a queue full of
    another target's copies (here a hung baseline's) does not turn the dead shadow's copies
    into drops: they stay counted as unreachable, and its failure rows keep coming."""
    upstreams["v2"].mode, upstreams["v2"].delay_s = "slow", 5.0  # the hung baseline
    config = make_config(
        tmp_path,
        {"v1": upstreams["v1"].url, "v3": f"http://127.0.0.1:{free_port()}"},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 1, "workers": 1, "timeout_s": 5.0}},
    )
    seed_routes(config)
    engine = open_engine(config.store.url)
    try:  # a baseline with no routed share: it only gets the mirrored copies
        RouteRepository(engine).set_route("m", baseline_url=upstreams["v2"].url, baseline_bp=0)
    finally:
        engine.dispose()
    gw = await start_gateway(config)
    mirror = gw.runner.gateway.mirror
    mirror.backoff.first_s = 60.0  # no probe within the test
    await _post(gw, "r0")  # its shadow copy is refused; its baseline copy hangs
    await _shadow_rows(gw, 1)
    for i in range(1, 6):  # the queue holds one baseline copy; the others are dropped
        await _post(gw, f"r{i}")
    assert mirror.unreachable == 5  # every shadow copy after r0's, none dropped
    assert mirror.dropped == 4  # the baseline's copies of r2..r5
    await gw.stop()
