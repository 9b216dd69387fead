"""The baseline through the real gateway: a fresh instance of the stable version that gets a
share like-for-like with the canary, and the shadow's mirrored copies in shadow.

The baseline upstream answers like production (it runs v1) but is its own server, so which
instance served a request is read from what each server saw and from the log rows.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from coalmine.store.routes import RouteRepository
from coalmine.store.schema import guard_trips
from tests.gateway.conftest import (
    RunningGateway,
    StartGateway,
    Upstream,
    free_port,
    make_config,
    start_on_route,
)

V1 = "/v1/models/m:predict"


@pytest.fixture
async def baseline() -> AsyncIterator[Upstream]:
    up = Upstream("v1")  # the stable version, on a fresh instance of its own
    await up.start()
    yield up
    await up.stop()


async def _send(gw: RunningGateway, users: list[str], tag: str) -> None:
    """One request per user (request id `tag:user`), 16 at a time; every answer is a 200."""
    semaphore = asyncio.Semaphore(16)

    async def one(user: str) -> None:
        async with semaphore:
            status, _, _ = await gw.post(
                V1, headers={"X-User-Id": user, "X-Request-ID": f"{tag}:{user}"}
            )
        assert status == 200

    await asyncio.gather(*(one(u) for u in users))


def _served(up: Upstream, tag: str) -> set[str]:
    """The users whose request tagged `tag` reached `up`."""
    out = set()
    for seen in up.seen:
        tagged, _, user = seen["headers"]["X-Request-ID"].partition(":")
        if tagged == tag:
            out.add(user)
    return out


def _within_binomial(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p))


async def _metrics(gw: RunningGateway) -> str:
    async with gw.session.get(gw.url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_baseline_share_is_sticky_leaves_canary_users_alone_and_follows_live_changes(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 20})
    gw = await start_on_route(
        start_gateway, config, baseline_url=baseline.url + "/", baseline_bp=2000, rollout_id=7
    )
    users = [f"user-{i}" for i in range(600)]
    await _send(gw, users, "a")
    on_baseline, on_canary = _served(baseline, "a"), _served(upstreams["v2"], "a")
    on_stable = _served(upstreams["v1"], "a")
    assert on_baseline | on_canary | on_stable == set(users)
    assert len(on_baseline) + len(on_canary) + len(on_stable) == len(users)  # one call each
    assert _within_binomial(len(on_baseline), len(users), 0.2), len(on_baseline)
    assert _within_binomial(len(on_canary), len(users), 0.2), len(on_canary)
    assert 'role="baseline"' in await _metrics(gw)

    # sticky: the same users again land on the same instances
    await _send(gw, users[:200], "b")
    assert _served(baseline, "b") == on_baseline & set(users[:200])

    # baseline off, live: its users go back to production, canary users never move
    RouteRepository(gw.engine).set_route("m", baseline_url=None, baseline_bp=0)
    await asyncio.sleep(0.5)
    await _send(gw, users, "c")
    assert _served(baseline, "c") == set()
    assert _served(upstreams["v2"], "c") == on_canary
    assert _served(upstreams["v1"], "c") == on_stable | on_baseline

    # and on again, live: the same users as before
    RouteRepository(gw.engine).set_route("m", baseline_url=baseline.url, baseline_bp=2000)
    await asyncio.sleep(0.5)
    await _send(gw, users, "d")
    assert _served(baseline, "d") == on_baseline
    assert _served(upstreams["v2"], "d") == on_canary

    await gw.stop()
    rows = gw.rows()
    assert len(rows) == 3 * len(users) + 200  # one row per call, no failovers
    by_role = Counter(r.role for r in rows)
    assert by_role["baseline"] == 2 * len(on_baseline) + len(on_baseline & set(users[:200]))
    for row in rows:
        # every row of the moment carries the canary's weight and the rollout: the analysis
        # stratifies by it, and the baseline is compared within the same stratum
        assert (row.canary_weight_bp, row.rollout_id, row.status) == (2000, 7, 200)
        if row.role == "baseline":
            assert row.version == "v1"
            assert json.loads(row.prediction) == ["label-v1"]


@pytest.mark.parametrize("failure", ["down", "error", "slow"])
async def test_a_failing_baseline_answers_with_production_and_never_trips_the_guard(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
    failure: str,
) -> None:
    baseline.mode, baseline.delay_s = failure, 1.0
    baseline_url = f"http://127.0.0.1:{free_port()}" if failure == "down" else baseline.url
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 50},
        # the guard trips after 2 consecutive canary failures: baseline failures are not those
        gateway={"fast_guard_failures": 2, "upstream_timeout_s": 0.3},
    )
    gw = await start_on_route(start_gateway, config, baseline_url=baseline_url, baseline_bp=5000)
    served: Counter[str] = Counter()
    for i in range(12):
        status, headers, body = await gw.post(
            V1, headers={"X-Request-ID": f"r{i}", "X-User-Id": f"u{i}"}
        )
        assert status == 200
        version = headers["X-Model-Version"]
        served[version] += 1
        assert json.loads(body) == {"predictions": [f"label-{version}"]}
    assert served["v1"] > 0 and served["v2"] > 0  # both halves were exercised
    assert 'coalmine_gateway_baseline_failovers_total{model="m"}' in await _metrics(gw)
    await gw.stop()

    with gw.engine.connect() as conn:
        assert list(conn.execute(select(guard_trips))) == []
    rows = gw.rows()
    expected_error = {"down": "connection", "error": "http_5xx", "slow": "timeout"}[failure]
    for i in range(12):
        mine = [(r.role, r.version, r.error_class) for r in rows if r.request_id == f"r{i}"]
        if mine[0][0] == "baseline":
            assert mine == [("baseline", "v1", expected_error), ("stable", "v1", None)]
        else:
            assert mine == [("canary", "v2", None)]
    assert sum(r.role == "baseline" for r in rows) == served["v1"]
    assert {r.canary_weight_bp for r in rows} == {5000}


async def test_shadow_with_a_baseline_mirrors_the_same_requests_to_both(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v3")}
    config = make_config(tmp_path, urls, routing={"shadow": "v3", "mirror_share": 100})
    gw = await start_on_route(start_gateway, config, baseline_url=baseline.url)  # shadow: no share
    n = 60
    await _send(gw, [f"u{i}" for i in range(n)], "s")
    await gw.stop()
    by_request: dict[str, list[tuple[str, str]]] = {}
    for row in gw.rows():
        by_request.setdefault(row.request_id, []).append((row.role, row.version))
        assert row.status == 200
    assert len(by_request) == n
    for roles in by_request.values():
        assert sorted(roles) == [("baseline", "v1"), ("shadow", "v3"), ("stable", "v1")]
    # the baseline's calls were all mirror copies, marked as such
    assert len(baseline.seen) == n
    assert all(s["headers"].get("X-Shadow") == "1" for s in baseline.seen)


async def test_shadow_canary_and_baseline_together_give_one_baseline_row_per_request(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2", "v3")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 30, "shadow": "v3", "mirror_share": 100},
    )
    gw = await start_on_route(start_gateway, config, baseline_url=baseline.url, baseline_bp=3000)
    n = 120
    await _send(gw, [f"u{i}" for i in range(n)], "t")
    await gw.stop()
    by_request: dict[str, list[str]] = {}
    for row in gw.rows():
        by_request.setdefault(row.request_id, []).append(row.role)
    routed = Counter()
    for roles in by_request.values():
        production = [r for r in roles if r in ("stable", "canary")]
        routed[production[0] if production else "baseline"] += 1
        # every request is mirrored (the existing rule, whatever served it), and the
        # baseline appears once: as the routed call, or as the mirror copy
        expected = ["shadow", "baseline", *production]
        assert sorted(roles) == sorted(expected)
    assert len(by_request) == n
    assert routed["baseline"] > 0 and routed["canary"] > 0 and routed["stable"] > 0
    # the baseline got each request exactly once: mirrored copies are marked, routed ones not
    assert len(baseline.seen) == n
    copies = sum(s["headers"].get("X-Shadow") == "1" for s in baseline.seen)
    assert copies == routed["stable"] + routed["canary"]


async def test_baseline_copies_share_the_bounded_mirror_and_drops_are_counted(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
) -> None:
    baseline.mode, baseline.delay_s = "slow", 2.0
    urls = {v: upstreams[v].url for v in ("v1", "v3")}
    config = make_config(
        tmp_path,
        urls,
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"shadow": {"queue_size": 8, "workers": 2, "timeout_s": 0.5}},
    )
    gw = await start_on_route(start_gateway, config, baseline_url=baseline.url)
    n = 80
    await _send(gw, [f"u{i}" for i in range(n)], "q")  # all 200: production never waits
    mirror = gw.runner.gateway.mirror
    await gw.stop()
    rows = gw.rows()
    copies = [r for r in rows if r.role in ("shadow", "baseline")]
    assert sum(r.role == "stable" for r in rows) == n
    # every copy is logged or counted as dropped, never silently lost
    assert len(copies) + mirror.dropped == 2 * n
    assert mirror.dropped > 0  # 2 workers against a 0.5 s baseline cannot keep up
    assert all(r.error_class == "timeout" for r in copies if r.role == "baseline")


async def test_no_baseline_traffic_without_a_url_or_a_share(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    baseline: Upstream,
    start_gateway: StartGateway,
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2", "v3")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 50})
    # a baseline URL with no share and no shadow: nothing to send it
    gw = await start_on_route(start_gateway, config, baseline_url=baseline.url, baseline_bp=0)
    users = [f"u{i}" for i in range(100)]
    await _send(gw, users, "x")
    assert baseline.seen == []
    # a shadow without a baseline URL: only the shadow gets copies
    RouteRepository(gw.engine).set_route("m", baseline_url=None, shadow="v3", mirror_bp=10_000)
    await asyncio.sleep(0.5)
    await _send(gw, users, "y")
    await gw.stop()
    assert baseline.seen == []
    rows = gw.rows()
    assert not [r for r in rows if r.role == "baseline"]
    assert sum(r.role == "shadow" for r in rows) == len(users)
