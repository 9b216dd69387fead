"""The control API's OpenAPI document names the errors its routes answer (404, 409, the
token's 401/403), and a 405's `Allow` header names the methods the document lists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "openapi-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = {"{model}": "iris", "{rollout_id}": "1"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp / 'c.db'}"},
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


@pytest.fixture(scope="module")
def paths(api: str) -> dict[str, dict[str, Any]]:
    doc = httpx.get(api + "/api/v1/openapi.json", headers=AUTH)
    assert doc.status_code == 200
    return {p: ops for p, ops in doc.json()["paths"].items() if not p.startswith("/api/v1/ui")}


def _concrete(path: str) -> str:
    for name, value in EXAMPLES.items():
        path = path.replace(name, value)
    return path


def test_every_operation_documents_the_tokens_errors(paths: dict[str, dict[str, Any]]) -> None:
    for path, ops in paths.items():
        for method, op in ops.items():
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_operations_on_a_named_model_or_rollout_document_404(
    paths: dict[str, dict[str, Any]],
) -> None:
    named = [(p, m) for p, ops in paths.items() for m in ops if "{" in p]
    assert len(named) >= 10
    for path, method in named:
        answer = paths[path][method]["responses"].get("404")
        assert answer is not None, (method, path)
        schema = answer["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_operations_the_state_may_refuse_document_409(paths: dict[str, dict[str, Any]]) -> None:
    refusable = ["/api/v1/rollouts", "/api/v1/models/{model}/rollback"] + [
        f"/api/v1/rollouts/{{rollout_id}}/{c}"
        for c in ("pause", "resume", "promote", "abort", "approve")
    ]
    for path in refusable:
        assert "409" in paths[path]["post"]["responses"], path


def test_the_documented_404_and_409_are_what_the_api_answers(api: str) -> None:
    missing = httpx.post(api + "/api/v1/rollouts/999/pause", headers=AUTH)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    nothing = httpx.post(api + "/api/v1/models/iris/rollback", headers=AUTH)
    assert nothing.status_code == 409 and set(nothing.json()) == {"error"}


def test_a_405_allows_exactly_the_documented_methods(
    api: str, paths: dict[str, dict[str, Any]]
) -> None:
    for path, ops in paths.items():
        documented = {m.upper() for m in ops}
        wrong = next(m for m in ("DELETE", "PATCH", "PUT") if m not in documented)
        r = httpx.request(wrong, api + _concrete(path), headers=AUTH)
        assert r.status_code == 405, (wrong, path)
        assert set(r.headers["Allow"].split(", ")) == documented, (path, r.headers["Allow"])
        assert r.json()["error"].startswith(f"{wrong} not allowed on {_concrete(path)}")


def test_invalid_input_is_an_error_body_naming_each_field_as_documented(
    api: str, paths: dict[str, dict[str, Any]]
) -> None:
    for path, ops in paths.items():
        for method, op in ops.items():
            answer = op["responses"].get("422")
            if answer is not None:
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    bad = {"model": "iris", "candidate": "v 2", "url": "http://h:1/?q=1", "extra": 1}
    r = httpx.post(api + "/api/v1/rollouts", json=bad, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid request: 3 error(s)"
    reasons = {e["field"]: e["reason"] for e in body["errors"]}
    assert set(reasons) == {"candidate", "url", "extra"}
    assert "a base URL takes no query" in reasons["url"]
    r = httpx.get(api + "/api/v1/rollouts/not-a-number", headers=AUTH)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["path.rollout_id"]
