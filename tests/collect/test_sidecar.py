"""The logging sidecar process in front of a real model server, reporting to a real control
API: answers passed back as they came, each inference call logged with its role."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from coalmine.testing import serve_estimator
from tests.collect.test_nginx_rollout import TOKEN, sidecar
from tests.control_api import control_api
from tests.providers.nginx_harness import free_port

X, Y = load_iris(return_X_y=True)


@pytest.mark.slow
def test_the_sidecar_passes_answers_back_and_reports_each_call(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    estimator = LogisticRegression(max_iter=500).fit(X, Y)
    with serve_estimator(estimator, "iris", "v1") as model:
        config = parse_config({
            "store": {"url": f"sqlite:///{db}"},
            "models": [{"name": "iris", "routing": {"stable": "v1"}, "versions": [
                {"name": "v1", "url": model.url}, {"name": "v2", "url": dead}]}],
        })  # fmt: skip
        engine = open_engine(config.store.url)
        routes = RouteRepository(engine)
        routes.seed_from_config(config)
        routes.set_route("iris", canary="v2", canary_weight_bp=1000)
        try:
            with (
                control_api(engine, TOKEN) as api,
                sidecar(model.url, "v1", api, tmp_path) as v1,
                sidecar(dead, "v2", api, tmp_path) as v2,
                httpx.Client(timeout=10) as http,
            ):
                path = "/v1/models/iris:predict"
                body = {"instances": [X[0].tolist()]}
                time.sleep(1.0)  # the sidecars' first route refresh
                direct = http.post(model.url + path, json=body)
                answer = http.post(v1 + path, json=body, headers={"X-Request-Id": "a"})
                assert answer.status_code == 200 and answer.json() == direct.json()
                assert answer.headers["X-Model-Version"] == "v1"
                mirrored = {"X-Request-Id": "a", "X-Coalmine-Shadow": "1"}
                copy = http.post(v1 + path, json=body, headers=mirrored)
                assert copy.status_code == 200
                assert http.get(v1 + "/v1/models/iris").status_code == 200  # not logged
                failed = http.post(v2 + path, json=body, headers={"X-Request-Id": "b"})
                assert failed.status_code == 502
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    with sqlite3.connect(db) as conn:
                        rows = conn.execute(
                            "SELECT request_id, version, role, status, error_class, prediction "
                            "FROM predictions ORDER BY request_id, role"
                        ).fetchall()
                    if len(rows) == 3:
                        break
                    time.sleep(0.1)
        finally:
            engine.dispose()
    predicted = json.dumps(direct.json()["predictions"], separators=(",", ":"))
    assert rows == [
        ("a", "v1", "shadow", 200, None, predicted),
        ("a", "v1", "stable", 200, None, predicted),
        ("b", "v2", "canary", 0, "connection", None),
    ]
