"""The traffic generator against a real gateway and a real model-server process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coalmine.config import parse_config
from coalmine.demo.data import REGIONS, load_demo_data
from coalmine.demo.traffic import TrafficConfig, TrafficGenerator
from coalmine.demo.train import train_demo_models
from coalmine.gateway.server import seed_routes, start_site
from coalmine.modelserver import ModelServerHandle, start_model_server
from coalmine.store.engine import open_engine
from coalmine.store.schema import feedback, predictions


@pytest.fixture(scope="module")
def v1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerHandle]:
    models = train_demo_models(tmp_path_factory.mktemp("m"), load_demo_data())
    with start_model_server(models.paths["v1"], name="digits", version="v1") as server:
        yield server


async def test_sticky_users_regions_and_late_partial_labels(
    tmp_path: Path, v1_server: ModelServerHandle
) -> None:
    config = parse_config(
        {
            "gateway": {"port": 0},
            "logging": {"flush_interval_s": 0.05},
            "store": {"url": f"sqlite:///{tmp_path / 'demo.db'}"},
            "models": [
                {
                    "name": "digits",
                    "versions": [{"name": "v1", "url": v1_server.url}],
                    "routing": {"stable": "v1"},
                    "slices": [{"name": "region", "header": "X-Region"}],
                }
            ],
        }
    )
    seed_routes(config)
    runner, port = await start_site(config, port=0)
    traffic = TrafficGenerator(
        TrafficConfig(
            gateway_url=f"http://127.0.0.1:{port}", rate=80, label_share=0.5, label_delay_s=0.5
        ),
        load_demo_data(),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(traffic.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    await task
    await runner.cleanup()  # flushes the prediction log
    stats = traffic.stats
    assert stats.sent > 50
    assert stats.answered == stats.sent and stats.failed == stats.transport_errors == 0
    assert stats.by_version == {"v1": stats.sent}
    assert set(stats.by_region) <= set(REGIONS) and len(stats.by_region) >= 3
    # Labels: late (0.5 s) and for about half: Binomial(n, 0.5) well inside 25..75%.
    assert stats.labels_rejected == 0
    assert 0.25 * stats.sent < stats.labels_accepted < 0.75 * stats.sent
    engine = open_engine(config.store.url)
    try:
        with engine.connect() as conn:
            logged = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
            labelled = conn.execute(select(func.count()).select_from(feedback)).scalar_one()
            slices = [r[0] for r in conn.execute(select(predictions.c.slices).limit(20))]
    finally:
        engine.dispose()
    assert logged == stats.sent
    assert labelled == stats.labels_accepted
    parsed = [json.loads(s) if isinstance(s, str) else s for s in slices]
    assert parsed and all(s["region"] in REGIONS for s in parsed)
