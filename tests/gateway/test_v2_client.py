"""A real Open Inference Protocol V2 client (Triton's `tritonclient[http]`) through the real
gateway to a real `serve-model` process answering with the binary tensor extension.

"Call the gateway exactly as you called the model": every call below is made once directly
against the model server and once through the gateway, and must give the same answer. The
client runs in a thread: it blocks (gevent), and the gateway serves from this test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.modelserver import ModelServerHandle, start_model_server
from tests.gateway.conftest import StartGateway, make_config

httpclient = pytest.importorskip("tritonclient.http")

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


@pytest.fixture(scope="module")
def named_iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerHandle]:
    """Iris with class *names*, so the label output is a BYTES tensor."""
    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target_names[iris.target])
    path = tmp_path_factory.mktemp("v2client") / "iris.joblib"
    joblib.dump(model, path)
    with start_model_server(path, name="iris", version="1") as server:
        yield server


def _infer(url: str, *, binary: bool, version: str = "") -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        x = httpclient.InferInput("input-0", list(ROWS.shape), "FP64")
        x.set_data_from_numpy(ROWS, binary_data=binary)  # raw input bytes when binary
        outputs = [
            httpclient.InferRequestedOutput("predict", binary_data=binary),
            httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        result = client.infer("iris", [x], model_version=version, outputs=outputs,
                              headers={"X-Request-ID": f"req-{binary}-{version}"})  # fmt: skip
        response = result.get_response()
        return {
            "labels": [v.decode() if isinstance(v, bytes) else v
                       for v in result.as_numpy("predict").tolist()],
            "proba": result.as_numpy("predict_proba"),
            "raw": [o.get("parameters", {}).get("binary_data_size") for o in response["outputs"]],
        }  # fmt: skip
    finally:
        client.close()


def _health(url: str, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(model),
            "version_ready": client.is_model_ready(model, "1"),
            "metadata": client.get_model_metadata(model),
            "version_metadata": client.get_model_metadata(model, "1"),
        }
    finally:
        client.close()


@pytest.mark.parametrize("upstream_client", ["httptools", "aiohttp"])
async def test_binary_outputs_decode_through_the_gateway_and_are_logged(
    tmp_path: Path, named_iris: ModelServerHandle, start_gateway: StartGateway,
    upstream_client: str,
) -> None:  # fmt: skip
    config = make_config(
        tmp_path, {"v1": named_iris.url}, gateway={"upstream_client": upstream_client},
        model="iris",
    )  # fmt: skip
    gw = await start_gateway(config)
    direct = await asyncio.to_thread(_infer, named_iris.url, binary=True)
    assert all(size for size in direct["raw"])  # the server did answer with raw tensors
    assert direct["labels"] == ["setosa", "virginica", "versicolor"]

    for binary, version in ((True, ""), (False, ""), (True, "1")):
        via = await asyncio.to_thread(_infer, gw.url, binary=binary, version=version)
        assert via["labels"] == direct["labels"]
        np.testing.assert_allclose(via["proba"], direct["proba"])
        assert all(bool(size) == binary for size in via["raw"])

    await gw.stop()
    rows = {r.request_id: r for r in gw.rows()}
    assert set(rows) == {"req-True-", "req-False-", "req-True-1"}
    for row in rows.values():  # a binary answer's prediction is logged like a JSON one's
        assert (row.status, row.role, row.version) == (200, "stable", "v1")
        assert json.loads(row.prediction) == direct["labels"]
        # and the probabilities beside it, named by the classes the server gave
        scores = json.loads(row.scores)
        assert [list(s) for s in scores] == [["setosa", "versicolor", "virginica"]] * 3
        np.testing.assert_allclose([list(s.values()) for s in scores], direct["proba"])
    # the logged input of a binary request is its decoded JSON form
    logged = json.loads(rows["req-True-"].input)
    assert logged["inputs"][0]["data"] == ROWS.ravel().tolist()


async def test_health_readiness_and_metadata_routes_reach_the_stable_version(
    tmp_path: Path, named_iris: ModelServerHandle, start_gateway: StartGateway
) -> None:
    config = make_config(tmp_path, {"v1": named_iris.url}, model="iris")
    gw = await start_gateway(config)
    direct = await asyncio.to_thread(_health, named_iris.url, "iris")
    via = await asyncio.to_thread(_health, gw.url, "iris")
    assert via == direct
    assert via["live"] and via["ready"] and via["model_ready"] and via["version_ready"]
    assert via["metadata"]["name"] == "iris"
    assert [o["name"] for o in via["metadata"]["outputs"]] == ["predict", "predict_proba"]

    unknown = await asyncio.to_thread(_health_of_unknown, gw.url)
    assert unknown == {"model_ready": False}
    # KServe V1's model readiness and metadata
    async with gw.session.get(gw.url + "/v1/models/iris") as resp:
        assert resp.status == 200
        assert resp.headers["X-Model-Version"] == "v1"
        body = await resp.json()
    assert body["ready"] is True and body["name"] == "iris"
    async with gw.session.get(gw.url + "/v1/models/nope") as resp:
        assert resp.status == 404
    await gw.stop()
    assert gw.rows() == []  # health and metadata calls are not predictions


def _health_of_unknown(url: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        return {"model_ready": client.is_model_ready("nope")}
    finally:
        client.close()
