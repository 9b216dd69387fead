"""The control API over real HTTP (uvicorn on a loopback port, SQLite file store).

The controller loop is not running here: these tests check the API's contract (auth,
status codes, error bodies, commands); tests/rollout/test_rollout_e2e.py runs everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine import Client
from coalmine.client import CoalmineAPIError
from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "s3cret-token"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "models": [
                {
                    "name": "iris",
                    "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                    "routing": {"stable": "v1"},
                }
            ],
        }
    )
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    try:
        with control_api(engine, TOKEN) as url:
            yield url
    finally:
        engine.dispose()


SPEC: dict[str, Any] = {
    "shadow": {"enabled": False},
    "canary": {
        "steps": [10, 100],
        "approval_before": [100],
        "criteria": [{"metric": "error_rate"}],
    },
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/rollouts"),
        ("POST", "/api/v1/rollouts"),
        ("POST", "/api/v1/rollouts/1/abort"),
        ("GET", "/api/v1/rollouts/1/webhooks"),
        ("POST", "/api/v1/models/iris/rollback"),
        ("GET", "/api/v1/metrics"),
    ],
)
def test_every_route_needs_the_token(api: str, method: str, path: str) -> None:
    missing = httpx.request(method, api + path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.request(method, api + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    basic = httpx.request(method, api + path, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


def test_openapi_document_lists_the_operations(api: str) -> None:
    doc = httpx.get(api + "/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert doc.status_code == 200
    paths = doc.json()["paths"]
    for path in (
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}/promote",
        "/api/v1/models/{model}/rollback",
    ):
        assert path in paths


def test_rollout_lifecycle_through_the_sdk(api: str) -> None:
    with Client(api, TOKEN) as client:
        assert [m["model"] for m in client.models()] == ["iris"]
        hook = {"url": "http://127.0.0.1:9/hook", "secret": "s3cret"}
        rollout = client.start_rollout(
            "iris", "v2", "http://127.0.0.1:10", {**SPEC, "webhooks": [hook]}
        )
        assert rollout.data["warnings"] and "no traffic" in rollout.data["warnings"][0]
        status = rollout.status()
        assert status["phase"] == "pending" and status["steps"] == [10, 100]
        assert client.model("iris")["active_rollout"]["id"] == rollout.id
        assert client.model("iris")["versions"]["v2"] == "http://127.0.0.1:10"

        with pytest.raises(CoalmineAPIError) as conflict:
            client.start_rollout("iris", "v3", "http://127.0.0.1:11")
        assert conflict.value.status == 409
        assert f"already has an active rollout: #{rollout.id}" in conflict.value.message

        assert client.pause(rollout.id)["phase"] == "paused"
        with pytest.raises(CoalmineAPIError) as bad:
            client.approve(rollout.id + 100)
        assert bad.value.status == 404
        assert client.resume(rollout.id, "looked fine")["phase"] == "pending"
        aborted = client.abort(rollout.id, "changed my mind")
        assert aborted["phase"] == "aborted" and aborted["reason"] == "changed my mind"
        with pytest.raises(CoalmineAPIError) as ended:
            client.promote(rollout.id)
        assert ended.value.status == 409 and "already ended" in ended.value.message
        events = client.events(rollout.id)
        assert [e["kind"] for e in events] == ["created", "pause", "resume", "abort"]
        # one delivery per transition, queued in the outbox (no sender runs here)
        deliveries = client.webhook_deliveries(rollout.id)
        assert [d["seq"] for d in deliveries] == [e["seq"] for e in events[1:]]
        assert {d["state"] for d in deliveries} == {"pending"}
        assert all("secret" not in d for d in deliveries)

        with pytest.raises(CoalmineAPIError) as nothing:
            client.rollback("iris")
        assert nothing.value.status == 409 and "nothing to roll back" in nothing.value.message


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "nope", "candidate": "v2", "url": "http://h:1"}, 404, None),
        (
            {
                "model": "iris",
                "candidate": "v2",
                "url": "http://h:1",
                "spec": {"canary": {"steps": [50, 5]}},
            },
            422,
            "spec.canary.steps",
        ),
        (
            {
                "model": "iris",
                "candidate": "v2",
                "url": "http://h:1",
                "spec": {"canary": {"criteria": [{"metric": "acuracy"}]}},
            },
            422,
            "spec.canary.criteria.0",
        ),
        ({"model": "iris", "candidate": "v2", "url": "not a url"}, 422, None),
        (
            {
                "model": "iris",
                "candidate": "v2",
                "url": "http://h:1",
                # relative to a noise floor, with no baseline to measure it
                "spec": {"shadow": {"criteria": [{"metric": "agreement", "margin": 0.05}]}},
            },
            422,
            "spec.shadow.criteria",
        ),
        (
            {
                "model": "iris",
                "candidate": "v2",
                "url": "http://h:1",
                "spec": {"baseline": "not a url"},
            },
            422,
            "spec.baseline",
        ),
        ({"model": "iris", "candidate": "v1", "url": "http://h:1"}, 409, None),
        # the gateway appends request paths to base URLs: a query or fragment would break it
        ({"model": "iris", "candidate": "v2", "url": "http://h:1/?key=1"}, 422, None),
        (
            {
                "model": "iris",
                "candidate": "v2",
                "url": "http://h:1",
                "spec": {"baseline": "http://h:2/#frag"},
            },
            422,
            "spec.baseline",
        ),
    ],
)
def test_bad_starts_are_refused_with_reasons(
    api: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    r = httpx.post(
        api + "/api/v1/rollouts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == status, r.text
    if field:
        assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()
    with Client(api, TOKEN) as client:
        assert client.rollouts() == []  # nothing half-created


def test_malformed_json_is_a_4xx(api: str) -> None:
    r = httpx.post(
        api + "/api/v1/rollouts",
        content=b"{nope",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_serve_refuses_to_start_the_api_without_a_token(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path / 'c.db'}'}}\n"
        "gateway: {port: 0}\napi: {port: 0}\n"
        "models: [{name: iris, versions: [{name: v1, url: 'http://127.0.0.1:9'}], "
        "routing: {stable: v1}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "COALMINE_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to start the control API without a token" in done.stderr
