"""A client's X-Request-ID is logged exactly as echoed, so feedback sent with the echoed id
finds its prediction: an id longer than the log keeps is refused, not cut."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.gateway.conftest import StartGateway, Upstream, make_config

V1 = "/v1/models/m:predict"


async def test_an_id_longer_than_128_characters_is_refused_and_128_is_kept_whole(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    too_long = "r" * 129
    status, headers, body = await gw.post(V1, headers={"X-Request-ID": too_long})
    assert status == 400
    assert json.loads(body)["error"].startswith("X-Request-ID: longer than 128 characters")
    assert "X-Request-ID" not in headers  # nothing echoed that the log would not hold
    assert upstreams["v1"].seen == []
    async with gw.session.get(gw.url + "/v1/models/m", headers={"X-Request-ID": too_long}) as r:
        assert r.status == 400  # the pass-through routes (metadata, health) hold to it too

    longest = "k" * 128
    status, headers, _ = await gw.post(V1, headers={"X-Request-ID": longest})
    assert status == 200 and headers["X-Request-ID"] == longest
    feedback = {"request_id": headers["X-Request-ID"], "label": "label-v1"}
    async with asyncio.timeout(10):
        status, _, body = await gw.post("/v1/feedback", feedback)
    assert status == 200 and json.loads(body)["accepted"] == 1, body
    await gw.stop()
    assert [r.request_id for r in gw.rows()] == [longest]
