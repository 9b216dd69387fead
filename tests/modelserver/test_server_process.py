"""The model server as a real process on loopback: protocols, errors, faults, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coalmine.modelserver import ModelServerHandle, start_model_server

ROW = [5.1, 3.5, 1.4, 0.2]


async def _post(url: str, body: Any = None, data: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with session.post(url, **kwargs) as resp:
            return resp.status, await resp.json()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_all_three_protocols(iris_server: ModelServerHandle) -> None:
    base = iris_server.url
    status, v1 = await _post(f"{base}/v1/models/iris:predict", {"instances": [ROW]})
    assert status == 200 and v1["predictions"] == [0] and len(v1["probabilities"][0]) == 3
    v2_body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    status, v2 = await _post(f"{base}/v2/models/iris/infer", v2_body)
    assert status == 200 and v2["model_version"] == "v7" and v2["outputs"][0]["data"] == [0]
    status, plain = await _post(f"{base}/models/iris/predict", {"features": ROW})
    assert status == 200 and plain["prediction"] == 0


async def test_metadata_and_health(iris_server: ModelServerHandle) -> None:
    base = iris_server.url
    status, v1 = await _get(f"{base}/v1/models/iris")
    assert status == 200 and v1["ready"] is True and v1["n_features"] == 4
    status, v2 = await _get(f"{base}/v2/models/iris")
    assert status == 200 and v2["versions"] == ["v7"] and v2["platform"] == "sklearn"
    for path in ("/v2/health/ready", "/healthz", "/v2/models/iris/ready",
                 "/v2/models/iris/versions/v7/ready", "/v2/models/iris/versions/v7"):  # fmt: skip
        status, _ = await _get(f"{base}{path}")
        assert status == 200, path
    status, body = await _get(f"{base}/v2/models/iris/versions/9/ready")
    assert status == 404 and "no version '9'" in body["error"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/models/iris:predict", b"{not json", "invalid JSON"),
        ("/v1/models/iris:predict", b'{"instances": [[1, 2]]}', "expected 4 features"),
        ("/v1/models/iris:predict", b'{"instances": [[1, "a", 3, 4]]}', "is not a number"),
        ("/v2/models/iris/infer", b'{"inputs": 3}', "non-empty list"),
        ("/models/iris/predict", b"\xff\xfe", "invalid JSON"),
    ],
)
async def test_malformed_input_is_a_400_with_the_reason(
    iris_server: ModelServerHandle, path: str, body: bytes, reason: str
) -> None:
    status, payload = await _post(f"{iris_server.url}{path}", data=body)
    assert status == 400
    assert reason in payload["error"]
    # And the server is still serving.
    status, _ = await _post(f"{iris_server.url}/v1/models/iris:predict", {"instances": [ROW]})
    assert status == 200


async def test_unknown_model_and_route_are_404(iris_server: ModelServerHandle) -> None:
    status, payload = await _post(f"{iris_server.url}/v1/models/nope:predict", {"instances": [ROW]})
    assert status == 404 and "nope" in payload["error"]
    status, _ = await _get(f"{iris_server.url}/v2/models/nope")
    assert status == 404
    status, _ = await _get(f"{iris_server.url}/no/such/route")
    assert status == 404


async def test_error_rate_injects_500s(model_files: dict[str, Path]) -> None:
    with start_model_server(model_files["iris"], name="iris", error_rate=0.5, seed=3) as server:
        statuses = [
            (await _post(f"{server.url}/v1/models/iris:predict", {"instances": [ROW]}))[0]
            for _ in range(60)
        ]
        # Binomial(60, 0.5): P(outside 15..45) < 1e-4.
        assert set(statuses) == {200, 500}
        assert 15 <= statuses.count(500) <= 45
        # Health is never faulted: a load balancer must still see the process as up.
        assert (await _get(f"{server.url}/healthz"))[0] == 200


async def test_delay_is_injected_on_inference_only(model_files: dict[str, Path]) -> None:
    with start_model_server(model_files["iris"], name="iris", delay_ms=300) as server:
        started = time.monotonic()
        status, _ = await _post(f"{server.url}/v1/models/iris:predict", {"instances": [ROW]})
        # A lower bound only: the injected sleep must have happened (no upper bound on speed).
        assert status == 200 and time.monotonic() - started >= 0.3


def test_sigterm_stops_cleanly(model_files: dict[str, Path]) -> None:
    server = start_model_server(model_files["iris"], name="iris")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_bad_model_file_fails_fast_with_the_reason(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.joblib"
    bogus.write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match="exited with code"):
        start_model_server(bogus)


def test_cli_command_is_registered(model_files: dict[str, Path]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "serve-model", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--error-rate" in out.stdout


async def test_flip_rate_makes_a_nondeterministic_classifier(
    model_files: dict[str, Path],
) -> None:
    with start_model_server(model_files["iris"], name="iris", flip_rate=0.3, seed=5) as server:
        answers = [
            (await _post(f"{server.url}/v1/models/iris:predict", {"instances": [ROW]}))[1]
            for _ in range(80)
        ]
    labels = [a["predictions"][0] for a in answers]
    majority = max(set(labels), key=labels.count)
    flipped = sum(label != majority for label in labels)
    # Binomial(80, 0.3): P(outside 8..40) < 1e-4
    assert 8 <= flipped <= 40
