"""Every door has a size: bodies and headers past their bound are refused with a 4xx, early.

Data plane (real gateway on loopback): inference and feedback bodies over
`gateway.max_body_bytes` get 413, feedback nested past the parser's stack 400, headers over
an 8 KiB line 400 or 431. Control API (real uvicorn on loopback): bodies over
`api.max_body_bytes` get 413 before authentication or any route, declared or chunked.
Other bounds: feedback items per request (MAX_ITEMS, tests/log), operator command reasons
(500 characters), list queries (`limit` ≤ 1000), criteria and slices (max_slices).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api
from tests.gateway.conftest import StartGateway, Upstream, make_config

TOKEN = "sizes-token"
LIMIT = 4096


# -- data plane ------------------------------------------------------------------------------


async def test_data_plane_bodies_and_headers_are_bounded(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"max_body_bytes": LIMIT})
    gw = await start_gateway(config)
    big = json.dumps({"instances": [[0.5] * LIMIT]}).encode()
    status, _, _ = await gw.post("/v1/models/m:predict", big)
    assert status == 413
    assert upstreams["v1"].seen == []  # never forwarded

    labels = json.dumps([{"request_id": f"r{i}", "label": 1} for i in range(200)]).encode()
    assert len(labels) > LIMIT
    async with gw.session.post(gw.url + "/v1/feedback", data=labels) as resp:
        assert resp.status == 413

    deep = b"[" * 2000 + b"]" * 2000  # under the byte bound, deeper than json's stack
    async with gw.session.post(gw.url + "/v1/feedback", data=deep) as resp:
        assert resp.status == 400
        assert "nested deeper than" in (await resp.json())["error"]

    async with gw.session.post(
        gw.url + "/v1/models/m:predict", json={"instances": [1]}, headers={"X-Big": "x" * 9000}
    ) as resp:
        assert resp.status in (400, 431)  # aiohttp's server: 400; the protocol server: 431
        assert "X-Model-Version" not in resp.headers  # the gateway's refusal, no upstream's
    assert upstreams["v1"].seen == []


# -- control API -----------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "models": [
                {"name": "iris", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                 "routing": {"stable": "v1"}}
            ],
        }
    )  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    try:
        with control_api(engine, TOKEN, max_body_bytes=LIMIT) as url:
            yield url
    finally:
        engine.dispose()


def _rollout(padding: int) -> bytes:
    body = {"model": "iris", "candidate": "v2", "url": "http://127.0.0.1:9",
            "spec": {"canary": {"steps": [100]}, "notes": "x" * padding}}  # fmt: skip
    return json.dumps(body).encode()


@pytest.mark.parametrize("auth", [{}, {"Authorization": f"Bearer {TOKEN}"}])
def test_control_api_refuses_a_body_over_its_bound_before_anything_else(
    api: str, auth: dict[str, str]
) -> None:
    url = f"{api}/api/v1/rollouts"
    headers = {"Content-Type": "application/json", **auth}
    declared = httpx.post(url, content=_rollout(LIMIT), headers=headers)
    assert declared.status_code == 413
    assert declared.json() == {"error": f"request body over {LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bound is counted as it arrives
        body = _rollout(LIMIT * 4)
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    chunked = httpx.post(url, content=chunks(), headers=headers)
    assert chunked.status_code == 413


def test_control_api_bodies_under_the_bound_reach_the_route(api: str) -> None:
    url = f"{api}/api/v1/rollouts"
    headers = {"Content-Type": "application/json"}
    assert httpx.post(url, content=_rollout(100), headers=headers).status_code == 401
    authed = {**headers, "Authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(url, content=_rollout(100), headers=authed)
    assert answer.status_code == 422  # read and validated: `notes` is not a spec field
    assert any(e["field"] == "spec.notes" for e in answer.json()["errors"])

    def chunks() -> Iterator[bytes]:
        body = json.dumps({"reason": "chunked, small"}).encode()
        yield body[:5]
        yield body[5:]

    paused = httpx.post(f"{api}/api/v1/rollouts/999/pause", content=chunks(), headers=authed)
    assert paused.status_code == 404  # the body was replayed to the route intact


# The control API's request head is bounded by `coalmine serve` (h11, 16 KiB past one read):
# tests/security/test_serve_doors.py sends it a 1 MB header.


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/rollouts/{2**63}",
        f"/api/v1/rollouts/{2**63}/events",
        f"/api/v1/rollouts/{10**30}/judgement",
        f"/api/v1/ui/rollouts/{2**63}",
        f"/api/v1/rollouts/1/events?after={2**63}",
    ],
)
def test_control_api_ids_past_what_the_store_holds_are_422(api: str, path: str) -> None:
    answer = httpx.get(api + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 422, answer.text  # was a 500 (OverflowError in the driver)


@pytest.mark.parametrize("chunked", [False, True])
def test_control_api_answers_413_to_a_client_still_sending(api: str, chunked: bool) -> None:
    """A client that writes its whole body before reading (httpx, requests, curl) reads the
    413, not a connection reset: the refused body is read and dropped, up to a bound, before
    the answer and the close (unread bytes at close make the kernel reset the connection)."""
    url = f"{api}/api/v1/rollouts"
    body = _rollout(8 << 20)  # megabytes past the socket buffers

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    for _ in range(20):  # the reset is a race: repeated, it is lost nearly every run
        r = httpx.post(url, content=pieces() if chunked else body, headers=headers, timeout=30)
        assert r.status_code == 413
