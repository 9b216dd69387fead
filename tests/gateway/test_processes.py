"""The gateway as a real process: SIGTERM flushes the log; a real model server upstream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import joblib
import pytest
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select

from coalmine.modelserver import ModelServerHandle, start_model_server
from coalmine.store.engine import open_engine
from coalmine.store.schema import predictions
from tests.gateway.conftest import StartGateway, Upstream, make_config, on_server


def _start_gateway_process(
    config_path: Path, processes: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "gateway", "--config", str(config_path),
         "--port", "0", "--processes", str(processes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a failed start kills the children too
    )  # fmt: skip
    assert process.stdout is not None
    urls = set()
    for _ in range(processes):
        line = process.stdout.readline().decode()  # "coalmine gateway listening on http://..."
        if "listening on" not in line:
            os.killpg(process.pid, signal.SIGKILL)
            _, err = process.communicate(timeout=10)
            raise AssertionError(f"gateway did not start: {line!r} {err.decode()[-3000:]}")
        urls.add(line.split("listening on ")[1].split()[0])
    assert len(urls) == 1  # every process serves the same port (SO_REUSEPORT)
    return process, urls.pop()


@pytest.mark.parametrize("processes", [1, 2])
async def test_sigterm_flushes_every_log_row(
    tmp_path: Path, upstreams: dict[str, Upstream], processes: int, server: str
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2", "v3")}
    config = make_config(
        tmp_path,
        urls,
        routing={"canary": "v2", "canary_weight": 25, "shadow": "v3", "mirror_share": 100},
        # nothing is written before the stop: only the SIGTERM flush can save these rows
        logging={"flush_interval_s": 60, "batch_size": 100_000},
    )
    config = on_server(config, server)  # each gateway.server (conftest's `server` fixture)
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    process, url = _start_gateway_process(config_path, processes)
    n = 150
    try:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                async with session.post(
                    f"{url}/v1/models/m:predict",
                    json={"instances": [[i, 1.0]]},
                    headers={"X-User-Id": f"u{i}"},
                ) as resp:
                    assert resp.status == 200

            await asyncio.gather(*(one(i) for i in range(n)))
        # the copies go out after the answers; on a loaded machine the mirror's 2 s drain at
        # stop may not be enough for all of them, and this test is about the log, not the drain
        deadline = asyncio.get_running_loop().time() + 30
        while len(upstreams["v3"].seen) < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert len(upstreams["v3"].seen) == n
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, process.stderr.read().decode()[-2000:] if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    engine = open_engine(config.store.url)
    with engine.connect() as conn:
        by_role = dict(
            conn.execute(
                select(predictions.c.role, func.count()).group_by(predictions.c.role)
            ).all()
        )
    engine.dispose()
    assert by_role.get("shadow") == n, by_role
    assert by_role.get("stable", 0) + by_role.get("canary", 0) == n, by_role


@pytest.fixture(scope="module")
def iris_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ModelServerHandle]]:
    path = tmp_path_factory.mktemp("model") / "iris.joblib"
    iris = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), path)
    with (
        start_model_server(path, name="m", version="v1") as stable,
        start_model_server(path, name="m", version="v3") as shadow,
    ):
        yield [stable, shadow]


async def test_a_real_model_server_upstream_over_v1_and_v2(
    tmp_path: Path, iris_servers: list[ModelServerHandle], start_gateway: StartGateway
) -> None:
    stable, shadow = iris_servers
    config = make_config(
        tmp_path,
        {"v1": stable.url, "v3": shadow.url},
        routing={"shadow": "v3", "mirror_share": 100},
        gateway={"upstream_client": "httptools"},
    )
    gw = await start_gateway(config)
    status, headers, body = await gw.post(
        "/v1/models/m:predict", {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    )
    assert status == 200, body
    assert headers["X-Model-Version"] == "v1"
    assert json.loads(body)["predictions"] == [0, 2]
    v2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                      "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
    status, _, body = await gw.post("/v2/models/m/infer", v2)
    assert status == 200, body
    status, _, body = await gw.post("/v1/models/m:predict", {"instances": "nonsense"})
    assert 400 <= status < 500  # the model's own rejection, passed through
    await gw.stop()
    rows = gw.rows()
    assert [(r.role, r.version) for r in rows if r.role == "stable"] == [("stable", "v1")] * 3
    shadow_predictions = sorted(
        json.dumps(json.loads(r.prediction)) for r in rows if r.role == "shadow" and r.prediction
    )
    assert json.dumps([0, 2]) in shadow_predictions
    assert json.dumps([0]) in shadow_predictions
    assert os.path.exists(tmp_path / "coalmine.db")


async def test_serve_in_process_until_the_callers_stop_event(
    tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    from coalmine.gateway.server import seed_routes, serve

    config = make_config(tmp_path, {"v1": upstreams["v1"].url})
    seed_routes(config)
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(serve(config, port=0, on_listening=ports.append, stop=stop))
    while not ports:
        await asyncio.sleep(0.01)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{ports[0]}/models/m/predict", json={"instances": [1]}) as r,
    ):
        assert r.status == 200
    stop.set()
    await task
    engine = open_engine(config.store.url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(predictions)).scalar() == 1
    engine.dispose()


def test_the_listening_line_is_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker announces on one stdout: print() wrote the text and its newline apart,
    so two workers' lines interleaved ("…(pid 1)…(pid 2)\\n\\n") and a reader saw a blank line."""
    from coalmine.gateway import server

    read_end, write_end = os.pipe()
    writes: list[tuple[int, bytes]] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append((fd, bytes(data)))
        return real_write(fd, data)

    class PipeStdout:
        def fileno(self) -> int:
            return write_end

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", PipeStdout())
    monkeypatch.setattr(os, "write", recording_write)
    try:
        server._announce(8080, "127.0.0.1")
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    assert writes == [(write_end, out)]
    line = f"coalmine gateway listening on http://127.0.0.1:8080 (pid {os.getpid()})\n"
    assert out == line.encode()
