"""The gateway freezes what it loaded at start, so full collections skip it."""

from __future__ import annotations

import gc
from pathlib import Path

from tests.gateway.conftest import StartGateway, Upstream, make_config


async def test_objects_alive_at_start_are_out_of_the_collectors_sight(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gc.unfreeze()
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    try:
        # the imported modules and the config alone are tens of thousands of objects
        assert gc.get_freeze_count() > 10_000
        status, _, _ = await gw.post("/v1/models/m:predict")
        assert status == 200
    finally:
        gc.unfreeze()  # the rest of this test session collects as usual
