"""Label poisoning: with a feedback token configured, only its holders may send labels.

A probe found `/v1/feedback` open to anyone who reaches the data plane: whoever can guess a
request id can make a candidate look better or worse. These run a real gateway on loopback.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from coalmine.config import ConfigError, parse_config
from coalmine.store.feedback import joined
from tests.gateway.conftest import RunningGateway, StartGateway, Upstream, make_config

TOKEN = "Zq7XfR2mLp9WvK4sT8nB3yH6jD1cG5e"  # distinctive: found if it leaks


async def _feedback(
    gw: RunningGateway, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with gw.session.post(
        gw.url + "/v1/feedback", data=json.dumps(body), headers=headers or {}
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _served(gw: RunningGateway) -> str:
    status, headers, _ = await gw.post("/v1/models/m:predict")
    assert status == 200
    return headers["X-Request-ID"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},  # a prefix is not the token
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
        {"X-Feedback-Token": TOKEN},
    ],
)
async def test_feedback_without_the_token_is_refused_and_nothing_is_stored(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"feedback_token": TOKEN})
    gw = await start_gateway(config)
    request_id = await _served(gw)
    status, answer_headers, body = await _feedback(
        gw, {"request_id": request_id, "label": 1}, headers
    )
    assert status == 401, body
    assert answer_headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in json.dumps(body) and TOKEN[:12] not in caplog.text
    status, _, body = await _feedback(
        gw, {"request_id": request_id, "label": 0}, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert (status, body["accepted"]) == (200, 1)
    assert [r.label for r in joined(gw.engine, "m")] == [0]  # only the authorised label
    assert TOKEN[:12] not in caplog.text


async def test_without_a_token_configured_feedback_stays_open(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    request_id = await _served(gw)
    status, _, body = await _feedback(gw, {"request_id": request_id, "label": 1})
    assert (status, body["accepted"]) == (200, 1)


async def test_the_token_may_come_from_the_environment(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COALMINE_FEEDBACK_TOKEN", TOKEN)
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    request_id = await _served(gw)
    assert (await _feedback(gw, {"request_id": request_id, "label": 1}))[0] == 401
    ok = await _feedback(
        gw, {"request_id": request_id, "label": 1}, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok[0] == 200


async def test_the_token_is_compared_in_constant_time(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    config = make_config(tmp_path, {"v1": upstreams["v1"].url}, gateway={"feedback_token": TOKEN})
    gw = await start_gateway(config)
    for token in ("x", TOKEN[:-1], TOKEN):
        await _feedback(gw, {"request_id": "r", "label": 1}, {"Authorization": f"Bearer {token}"})
    # every check went through compare_digest, on digests of one length (no length leak)
    assert len(compared) == 3 and {len(a) for a, _ in compared} == {32}
    assert all(len(a) == len(b) for a, b in compared)


def test_a_short_feedback_token_is_refused_naming_the_field() -> None:
    base: dict[str, Any] = {
        "models": [
            {"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
             "routing": {"stable": "v1"}}
        ]
    }  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "gateway": {"feedback_token": "short"}})
    assert [p for p, _ in info.value.errors] == ["gateway.feedback_token"]
