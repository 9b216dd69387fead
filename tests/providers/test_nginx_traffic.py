"""The nginx provider with the real Debian nginx carrying real traffic on loopback to real
aiohttp upstreams: weights, stickiness, a monotone ramp, the shadow's share, a rollback
observed within a second, and a config nginx -t refuses leaving the old split serving.

Tolerances are binomial: an observed share must lie within 4.5 standard deviations of the
configured one (a false alarm about once in 150,000 runs). The users are fixed strings, so
each run sees the same buckets: nginx's hash is deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coalmine.config import StickyKey
from coalmine.providers.base import ProviderError
from coalmine.providers.nginx import NginxProvider
from coalmine.routing.state import RouteState
from tests.providers.nginx_harness import (
    NGINX,
    Nginx,
    Upstreams,
    placeholder_settings,
    reloads,
    running_nginx,
    settled,
    upstreams,
)

pytestmark = pytest.mark.skipif(not NGINX.exists(), reason=f"{NGINX} is not installed")

STICKY = StickyKey(header="X-User-Id")
USERS = [f"user-{i}" for i in range(2000)]


@dataclasses.dataclass
class Stack:
    nginx: Nginx
    ups: Upstreams
    provider: NginxProvider
    base: RouteState


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with upstreams("v1", "v2", "v3") as ups:
        base = RouteState(
            model="iris", stable="v1", salt="rollout-7", urls={n: ups.url(n) for n in ups.ports}
        )
        first = NginxProvider("iris", STICKY, placeholder_settings(tmp_path))
        with running_nginx(tmp_path, first.render(base), first.location_snippet()) as nginx:
            yield Stack(nginx, ups, nginx.provider("iris", STICKY), base)


def within_binomial(hits: int, n: int, p: float) -> bool:
    return abs(hits / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


def canary_users(stack: Stack, users: list[str]) -> set[str]:
    return {u for u in users if stack.nginx.get(u) == "v2"}


def apply_and_settle(stack: Stack, route: RouteState) -> None:
    """Sync, then wait until the reload took (new workers answer: a request per poll)."""
    before = reloads(stack.nginx)
    assert stack.provider.sync(route) != []
    deadline = time.monotonic() + 5
    while not (reloads(stack.nginx) > before and settled(stack.nginx)):
        assert time.monotonic() < deadline, stack.nginx.error_log()[-2000:]
        time.sleep(0.01)
    assert reloads(stack.nginx) == before + 1


def test_weights_are_observed_and_users_are_sticky(stack: Stack) -> None:
    apply_and_settle(stack, dataclasses.replace(stack.base, canary="v2", canary_weight_bp=2000))
    on_canary = canary_users(stack, USERS)
    assert within_binomial(len(on_canary), len(USERS), 0.20), len(on_canary)
    again = USERS[:400]
    assert canary_users(stack, again) == on_canary & set(again)  # same users, same version


def test_raising_the_weight_only_moves_users_from_stable_to_canary(stack: Stack) -> None:
    users = USERS[:1200]
    previous: set[str] = set()
    for weight_bp in (500, 1750, 4000):
        apply_and_settle(
            stack, dataclasses.replace(stack.base, canary="v2", canary_weight_bp=weight_bp)
        )
        now = canary_users(stack, users)
        assert previous <= now, f"{len(previous - now)} users left the canary at {weight_bp} bp"
        assert within_binomial(len(now), len(users), weight_bp / 10_000), (weight_bp, len(now))
        previous = now


def test_the_shadow_receives_its_share_with_the_primary_request_id(stack: Stack) -> None:
    apply_and_settle(stack, dataclasses.replace(stack.base, shadow="v3", mirror_bp=3000))
    n = 1500
    served = [stack.nginx.get(f"user-{i}") for i in range(n)]
    assert set(served) == {"v1"}  # the mirror's answers are never returned
    deadline = time.monotonic() + 5
    while len(stack.ups.seen["v1"]) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the last mirror copies arrive
    mirrored = stack.ups.seen["v3"]
    assert within_binomial(len(mirrored), n, 0.30), len(mirrored)
    assert set(mirrored) <= set(stack.ups.seen["v1"])  # same X-Request-Id as the primary


def test_a_rollback_to_all_stable_is_observed_within_a_second(stack: Stack) -> None:
    apply_and_settle(stack, dataclasses.replace(stack.base, canary="v2", canary_weight_bp=5000))
    assert canary_users(stack, USERS[:200])
    started = time.monotonic()
    assert stack.provider.sync(stack.base) != []
    streak, i = 0, 0
    while streak < 100:  # 100 different users in a row on stable: the new split serves
        streak = streak + 1 if stack.nginx.get(USERS[i % len(USERS)]) == "v1" else 0
        i += 1
        assert time.monotonic() - started < 5, "the rollback never took"
    elapsed = time.monotonic() - started
    print(f"rollback observed {elapsed * 1000:.0f} ms after apply ({i} requests)")
    assert elapsed < 1.0
    assert canary_users(stack, USERS[:500]) == set()


def test_a_config_nginx_refuses_leaves_the_old_split_serving(stack: Stack) -> None:
    good = dataclasses.replace(stack.base, canary="v2", canary_weight_bp=2000)
    apply_and_settle(stack, good)
    on_canary = canary_users(stack, USERS[:500])
    written = stack.provider.read()
    count = reloads(stack.nginx)
    # a canary on a host nginx cannot resolve: `nginx -t` refuses the upstream
    bad = dataclasses.replace(
        good, urls={**good.urls, "v2": "http://coalmine-no-such-host.invalid:9002"}
    )
    with pytest.raises(ProviderError, match="nginx -t refused"):
        stack.provider.sync(bad)
    assert stack.provider.read() == written  # the file was never replaced
    assert reloads(stack.nginx) == count  # and the master never told to reload
    assert not list(stack.nginx.prefix.glob(".*coalmine*"))  # nothing left behind
    assert canary_users(stack, USERS[:500]) == on_canary
    stack.provider.sync(good)  # the same good route: nothing to do
    assert reloads(stack.nginx) == count


def test_a_failed_reload_puts_the_running_file_back_for_the_next_sync(stack: Stack) -> None:
    settings = stack.nginx.settings.model_copy(
        update={"pid_file": stack.nginx.prefix / "no-such.pid"}
    )
    lost = NginxProvider("iris", STICKY, settings)
    written = lost.read()
    route = dataclasses.replace(stack.base, canary="v2", canary_weight_bp=2000)
    with pytest.raises(ProviderError, match="cannot reload nginx"):
        lost.sync(route)
    assert lost.read() == written  # so the next sync still sees the difference
    assert not list(stack.nginx.prefix.glob(".*coalmine*"))
    apply_and_settle(stack, route)  # the right pid file: applied


def test_the_controller_moves_nginx_when_the_stored_route_changes(
    stack: Stack, tmp_path: Path
) -> None:
    from coalmine.config import parse_config
    from coalmine.providers.sync import TrafficSync
    from coalmine.rollout.controller import Controller
    from coalmine.rollout.judge import EngineJudge
    from coalmine.store.engine import open_engine
    from coalmine.store.routes import RouteRepository

    config = parse_config(
        {
            "models": [
                {
                    "name": "iris",
                    "versions": [{"name": n, "url": u} for n, u in stack.base.urls.items()],
                    "routing": {"stable": "v1", "salt": "rollout-7"},
                    "traffic": stack.nginx.settings.model_dump(mode="json"),
                }
            ],
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
        }
    )
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    ctl = Controller(engine, EngineJudge(engine), traffic=TrafficSync.from_config(config, engine))
    asyncio.run(ctl.tick())  # the stored route already is what nginx holds: no reload
    assert reloads(stack.nginx) == 0
    routes.set_route("iris", canary="v2", canary_weight_bp=10_000)
    asyncio.run(ctl.tick())
    deadline = time.monotonic() + 5
    while not (reloads(stack.nginx) == 1 and settled(stack.nginx)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert {stack.nginx.get(u) for u in USERS[:100]} == {"v2"}
    engine.dispose()


def test_a_hung_shadow_does_not_hold_back_the_answer(stack: Stack) -> None:
    """The client gets stable's answer while the shadow has not answered yet (an ordering,
    not a timing: the shadow is released only after the client has its response)."""
    release = threading.Event()
    stack.ups.held["v3"] = release
    try:
        apply_and_settle(stack, dataclasses.replace(stack.base, shadow="v3", mirror_bp=10_000))
        assert [stack.nginx.get(f"user-{i}") for i in range(5)] == ["v1"] * 5
        assert len(stack.ups.seen["v3"]) >= 1 and not release.is_set()
    finally:
        release.set()
