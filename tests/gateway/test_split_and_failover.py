"""The split through the real gateway: shares, stickiness, live weight changes, failover,
the fast guard, and exactly one log row per upstream call."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from coalmine.store.routes import RouteRepository
from coalmine.store.schema import guard_trips
from tests.gateway.conftest import StartGateway, Upstream, free_port, make_config

V1 = "/v1/models/m:predict"


async def _versions(gw, users: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for user in users:
        status, headers, _ = await gw.post(V1, headers={"X-User-Id": user})
        assert status == 200
        out[user] = headers["X-Model-Version"]
    return out


async def test_split_share_stickiness_and_live_weight_increase(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 20})
    gw = await start_gateway(config)
    users = [f"user-{i}" for i in range(1200)]
    first = await _versions(gw, users)
    canary = sum(v == "v2" for v in first.values())
    sd = math.sqrt(len(users) * 0.2 * 0.8)
    assert abs(canary - 0.2 * len(users)) <= 5 * sd  # binomial tolerance
    # the same users again: the same versions (sticky across requests)
    assert await _versions(gw, users[:200]) == {u: first[u] for u in users[:200]}

    # raise the weight in the store; the gateway (polling every 0.1 s) applies it within 1 s
    RouteRepository(gw.engine).set_route("m", canary_weight_bp=6000)
    await asyncio.sleep(1.0)
    second = await _versions(gw, users)
    moved_back = [u for u in users if first[u] == "v2" and second[u] == "v1"]
    assert moved_back == []  # canary users stay on the canary as the weight grows
    canary = sum(v == "v2" for v in second.values())
    sd = math.sqrt(len(users) * 0.6 * 0.4)
    assert abs(canary - 0.6 * len(users)) <= 5 * sd
    await gw.stop()
    weights = Counter(row.canary_weight_bp for row in gw.rows())
    assert set(weights) == {2000, 6000}


async def test_requests_without_a_key_are_split_randomly(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 50})
    gw = await start_gateway(config)
    versions = Counter()
    for _ in range(400):
        status, headers, _ = await gw.post(V1)  # no X-User-Id
        assert status == 200
        versions[headers["X-Model-Version"]] += 1
    assert abs(versions["v2"] - 200) <= 5 * math.sqrt(400 * 0.25)


async def test_cookie_sticky_key(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(
        tmp_path, urls, routing={"canary": "v2", "canary_weight": 50, "sticky": {"cookie": "uid"}}
    )
    gw = await start_gateway(config)
    for user in ("a", "b", "c", "d", "e"):
        seen = set()
        for _ in range(5):
            _, headers, _ = await gw.post(V1, headers={"Cookie": f"uid={user}; other=1"})
            seen.add(headers["X-Model-Version"])
        assert len(seen) == 1


async def test_canary_failover_retries_on_stable_and_logs_both(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {"v1": upstreams["v1"].url, "v2": f"http://127.0.0.1:{free_port()}"}  # v2 is down
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 100})
    gw = await start_gateway(config)
    for i in range(10):
        status, headers, body = await gw.post(V1, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
        assert headers["X-Model-Version"] == "v1"
        assert json.loads(body) == {"predictions": ["label-v1"]}
    await gw.stop()
    rows = gw.rows()
    assert len(rows) == 20
    for i in range(10):
        mine = [r for r in rows if r.request_id == f"r{i}"]
        assert [(r.role, r.version, r.error_class) for r in mine] == [
            ("canary", "v2", "connection"),
            ("stable", "v1", None),
        ]


async def test_without_failover_a_dead_canary_is_a_502(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {"v1": upstreams["v1"].url, "v2": f"http://127.0.0.1:{free_port()}"}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"canary_failover": False},
    )
    gw = await start_gateway(config)
    status, headers, _ = await gw.post(V1)
    assert status == 502
    assert headers["X-Model-Version"] == "v2"


async def test_fast_guard_routes_away_and_records_the_trip(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v2"].mode = "error"  # the canary answers 500
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"fast_guard_failures": 3},
    )
    gw = await start_gateway(config)
    statuses = [(await gw.post(V1))[0] for _ in range(10)]
    # a canary 5xx is the model's answer (no failover), but three in a row trip the guard
    assert statuses == [500, 500, 500] + [200] * 7
    assert len(upstreams["v2"].seen) == 3
    for _ in range(50):  # the trip is recorded off the event loop
        await asyncio.sleep(0.05)
        with gw.engine.connect() as conn:
            trips = list(conn.execute(select(guard_trips)))
        if trips:
            break
    assert [(t.model, t.version) for t in trips] == [("m", "v2")]
    assert RouteRepository(gw.engine).get("m").canary_weight_bp == 0  # type: ignore[union-attr]
    # after the store shows the zeroed weight, the canary still gets nothing
    await asyncio.sleep(0.3)
    assert [(await gw.post(V1))[0] for _ in range(5)] == [200] * 5
    assert len(upstreams["v2"].seen) == 3
    # an operator (or the controller) opening the canary again is obeyed
    upstreams["v2"].mode = "ok"
    RouteRepository(gw.engine).set_route("m", canary_weight_bp=10_000)
    await asyncio.sleep(1.0)
    _, headers, _ = await gw.post(V1)
    assert headers["X-Model-Version"] == "v2"


async def test_route_threshold_overrides_the_gateway_default(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v2"].mode = "error"
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"fast_guard_failures": 0},  # off by default here ...
    )
    gw = await start_gateway(config)
    RouteRepository(gw.engine).set_route("m", guard_failures=2)  # ... but on for this route
    await asyncio.sleep(1.0)
    statuses = [(await gw.post(V1))[0] for _ in range(5)]
    assert statuses == [500, 500, 200, 200, 200]


async def test_n_requests_give_exactly_the_expected_log_rows(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2", "v3")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 30, "shadow": "v3", "mirror_share": 100},
    )
    gw = await start_gateway(config)
    n = 120

    async def one(i: int) -> str:
        status, headers, _ = await gw.post(
            V1, headers={"X-Request-ID": f"req-{i}", "X-User-Id": f"u{i}"}
        )
        assert status == 200
        return headers["X-Model-Version"]

    served = await asyncio.gather(*(one(i) for i in range(n)))
    await gw.stop()  # drains the mirror and flushes the log
    rows = gw.rows()
    assert len(rows) == 2 * n
    by_request: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append((row.role, row.version))
        assert row.status == 200
    for i in range(n):
        roles = sorted(by_request[f"req-{i}"])
        production = "canary" if served[i] == "v2" else "stable"
        assert roles == sorted([(production, served[i]), ("shadow", "v3")])
    shadow = [r for r in rows if r.role == "shadow"]
    assert all(json.loads(r.prediction) == ["label-v3"] for r in shadow)
    # the shadow saw each request once, marked as a mirror copy
    assert len(upstreams["v3"].seen) == n
    assert all(s["headers"].get("X-Shadow") == "1" for s in upstreams["v3"].seen)


async def test_a_slow_canary_is_cut_at_the_canary_deadline_not_stables_timeout(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    upstreams["v2"].mode, upstreams["v2"].delay_s = "slow", 5.0
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    for failover, expected in ((True, (200, "v1")), (False, (504, "v2"))):
        (tmp_path / str(failover)).mkdir()
        config = make_config(
            tmp_path / str(failover),
            urls,
            routing={"canary": "v2", "canary_weight": 100},
            gateway={
                "canary_failover": failover,
                "canary_timeout_s": 0.3,
                "upstream_timeout_s": 30,
            },
        )
        gw = await start_gateway(config)
        status, headers, body = await gw.post(V1, headers={"X-Request-ID": f"slow-{failover}"})
        assert (status, headers["X-Model-Version"]) == expected, body
        if not failover:
            assert b"v2 timeout" in body
        await gw.stop()
        canary = [r for r in gw.rows() if r.role == "canary"]
        assert [(r.error_class, 300 <= r.latency_ms < 5000) for r in canary] == [("timeout", True)]
