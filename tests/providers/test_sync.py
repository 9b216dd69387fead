"""TrafficSync: the controller's hook keeps a provider on the stored route, once per change,
and a refusing layer is retried after a pause rather than every tick."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coalmine.config import parse_config
from coalmine.providers.base import ProviderError, TrafficProvider
from coalmine.providers.sync import TrafficSync
from coalmine.routing.state import RouteState
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository


class FileProvider(TrafficProvider[str]):
    """A real, minimal layer: one text file holding the canary weight."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied = 0
        self.refuse = False

    def render(self, route: RouteState) -> str:
        return f"canary {route.canary} {route.canary_weight_bp}\n"

    def read(self) -> str | None:
        return self.path.read_text() if self.path.exists() else None

    def diff(self, desired: str, current: str | None) -> list[str]:
        return [] if desired == current else [f"{current!r} -> {desired!r}"]

    def apply(self, desired: str) -> None:
        if self.refuse:
            raise ProviderError("refused")
        self.applied += 1
        self.path.write_text(desired)


def test_sync_applies_each_route_change_once_and_backs_off_a_refusal(tmp_path: Path) -> None:
    config = parse_config(
        {
            "models": [
                {
                    "name": "iris",
                    "versions": [
                        {"name": "v1", "url": "http://127.0.0.1:9001"},
                        {"name": "v2", "url": "http://127.0.0.1:9002"},
                    ],
                    "routing": {"stable": "v1"},
                }
            ],
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
        }
    )
    engine = open_engine(config.store.url)
    routes = RouteRepository(engine)
    routes.seed_from_config(config)
    provider = FileProvider(tmp_path / "layer.txt")
    now = [0.0]
    sync = TrafficSync(engine, {"iris": provider}, retry_s=5.0, clock=lambda: now[0])

    asyncio.run(sync.sync())
    asyncio.run(sync.sync())
    assert provider.applied == 1 and provider.read() == "canary None 0\n"

    routes.set_route("iris", canary="v2", canary_weight_bp=500)
    provider.refuse = True
    asyncio.run(sync.sync())  # refused: logged, the layer keeps what it had
    assert provider.read() == "canary None 0\n"
    provider.refuse = False
    now[0] = 4.9
    asyncio.run(sync.sync())
    assert provider.read() == "canary None 0\n"  # still pausing after the refusal
    now[0] = 5.1
    asyncio.run(sync.sync())
    assert provider.applied == 2 and provider.read() == "canary v2 500\n"
    engine.dispose()


def test_the_controller_syncs_the_traffic_layer_on_its_tick(tmp_path: Path) -> None:
    from coalmine.rollout.controller import Controller
    from coalmine.rollout.judge import EngineJudge

    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    RouteRepository(engine).seed_from_config(
        parse_config(
            {"models": [{"name": "iris", "versions": [{"name": "v1", "url": "http://h:1"}]}]}
        )
    )
    provider = FileProvider(tmp_path / "layer.txt")
    ctl = Controller(engine, EngineJudge(engine), traffic=TrafficSync(engine, {"iris": provider}))
    asyncio.run(ctl.tick())
    assert provider.read() == "canary None 0\n"
    engine.dispose()
