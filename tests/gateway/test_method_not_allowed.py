"""The data plane's 405s name the methods the path takes, in an Allow header."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import StartGateway, Upstream, make_config


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/models/m:predict", "POST"),
        ("PUT", "/v2/models/m/infer", "POST"),
        ("POST", "/v2/models/m/ready", "GET"),
        ("GET", "/v1/feedback", "POST"),
        ("DELETE", "/metrics", "GET"),
    ],
)
async def test_a_405_says_which_methods_the_path_takes(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    method: str,
    path: str,
    allowed: str,
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    async with gw.session.request(method, gw.url + path) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == allowed
        assert "error" in await resp.json()
