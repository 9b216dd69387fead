"""One contract suite for every traffic provider (render, diff, apply, read back, roll back).

Each provider gets a harness that builds it over real parts (a real SQLite store for
`builtin`, a real nginx master for `nginx`; for `gateway-api`, `istio` and `kserve`, which
no Kubernetes API server here can run, the official client against a loopback server that
answers as the API documents server-side apply, checking and defaulting with the published
CRD schemas when ../shared/k8s-crds is there: see k8s_api.py) and a ladder of routes a
rollout walks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coalmine.config import StickyKey, parse_config
from coalmine.providers import TrafficProvider, names
from coalmine.providers.builtin import BuiltinProvider
from coalmine.providers.nginx import NginxProvider
from coalmine.routing.state import RouteState
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.providers.k8s_harness import k8s_provider
from tests.providers.nginx_harness import NGINX, placeholder_settings, running_nginx

URLS = {"v1": "http://127.0.0.1:9001", "v2": "http://127.0.0.1:9002", "v3": "http://127.0.0.1:9003"}


def ladder(base: RouteState) -> list[RouteState]:
    """Shadow, canary steps, promotion-like full weight, then rollback to all-stable."""
    step = dataclasses.replace
    return [
        step(base, shadow="v3", mirror_bp=10_000, rollout_id=1),
        step(base, canary="v2", canary_weight_bp=500, shadow=None, mirror_bp=0, rollout_id=1),
        step(base, canary="v2", canary_weight_bp=2_550, rollout_id=1),
        step(base, canary="v2", canary_weight_bp=10_000, rollout_id=1),
        step(base, canary=None, canary_weight_bp=0, shadow=None, mirror_bp=0, rollout_id=None),
    ]


@dataclasses.dataclass
class Harness:
    provider: TrafficProvider[Any]
    base: RouteState
    reloads: Callable[[], int] = lambda: 0  # how often the traffic layer re-read its config
    mirrors: bool = True  # False: the layer cannot mirror, a shadow step renders all-stable


def _builtin(tmp_path: Path) -> Iterator[Harness]:
    config = parse_config(
        {
            "models": [
                {
                    "name": "iris",
                    "versions": [{"name": n, "url": u} for n, u in URLS.items()],
                    "routing": {"stable": "v1", "salt": "s"},
                }
            ],
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
        }
    )
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    base = routes.get("iris")
    assert base is not None
    try:
        yield Harness(BuiltinProvider("iris", routes), base)
    finally:
        engine.dispose()


def _nginx(tmp_path: Path) -> Iterator[Harness]:
    """A real nginx master; the upstreams need not run (their addresses are IPs)."""
    if not NGINX.exists():
        pytest.skip(f"{NGINX} is not installed")
    base = RouteState(model="iris", stable="v1", salt="s", urls=URLS)
    sticky = StickyKey(header="X-User-Id")
    first = NginxProvider("iris", sticky, placeholder_settings(tmp_path))
    with running_nginx(tmp_path, first.render(base), first.location_snippet()) as nginx:
        provider = CountingNginx("iris", sticky, nginx.settings)
        yield Harness(provider, base, lambda: provider.reloads)


class CountingNginx(NginxProvider):
    """Counts the SIGHUPs it sends (nginx logs them asynchronously, too late to count)."""

    reloads = 0

    def reload(self) -> None:
        self.reloads += 1
        super().reload()


def _kubernetes(name: str) -> Callable[[Path], Iterator[Harness]]:
    def harness(tmp_path: Path) -> Iterator[Harness]:
        base = RouteState(model="iris", stable="v1", salt="s", urls=URLS)
        with k8s_provider(name) as (provider, api):
            yield Harness(provider, base, api.patches, mirrors=name != "kserve")

    return harness


HARNESSES: dict[str, Callable[[Path], Iterator[Harness]]] = {
    "builtin": _builtin,
    "nginx": _nginx,
    "gateway-api": _kubernetes("gateway-api"),
    "istio": _kubernetes("istio"),
    "kserve": _kubernetes("kserve"),
}


def test_every_registered_provider_has_a_harness() -> None:
    assert sorted(HARNESSES) == names()


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from HARNESSES[request.param](tmp_path)


def test_render_is_pure_and_deterministic(harness: Harness) -> None:
    routes = ladder(harness.base)
    before = harness.provider.read()
    first = [harness.provider.render(r) for r in routes]
    assert [harness.provider.render(r) for r in routes] == first
    assert harness.provider.read() == before  # rendering touched nothing
    # different routes render differently (the rollback equals the base, by design)
    if not harness.mirrors:  # the shadow step is all-stable for a layer that cannot mirror
        assert first[0] == first[-1]
        first = first[1:]
    assert len({repr(d) for d in first}) == len(first)


def test_apply_then_diff_is_empty_and_a_repeat_touches_nothing(harness: Harness) -> None:
    p = harness.provider
    for route in ladder(harness.base):
        desired = p.render(route)
        p.apply(desired)
        assert p.diff(desired, p.read()) == []
        reloads = harness.reloads()
        p.apply(desired)
        assert p.sync(route) == []
        assert harness.reloads() == reloads
        assert p.read() == desired


def test_sync_reports_what_changed_and_rolls_back(harness: Harness) -> None:
    p = harness.provider
    canary, rollback = ladder(harness.base)[2], ladder(harness.base)[-1]
    assert p.sync(canary) != []
    assert p.read() == p.render(canary)
    assert p.sync(rollback) != []
    assert p.read() == p.render(rollback)
    assert p.diff(p.render(canary), p.read()) != []
