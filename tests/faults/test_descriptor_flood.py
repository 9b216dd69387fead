"""File descriptors exhausted on the data plane: the control plane still answers.

`coalmine serve` runs gateway, control API and controller in one process, so they share
one descriptor table. A flood of idle and half-sent connections on the gateway port must
neither starve the API and the controller's store connections nor outlive the gateway's
timeouts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp

from coalmine.modelserver import ModelServerHandle
from tests.faults.conftest import IRIS_ROW, TOKEN, Serve, serve_config

FLOOD = 300  # connections, against a descriptor limit of 256 for the whole process
BOUND_S = 20.0  # well past the 1 s timeouts configured below


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionResetError:  # refused with the client's unread half head: a reset
        return b"reset"


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def test_a_connection_flood_on_the_gateway_leaves_the_control_plane_answering(
    tmp_path: Path,
    stable_server: ModelServerHandle,
    serve: Callable[..., Serve],
) -> None:
    stable = stable_server
    timeouts = {"keepalive_timeout_s": 2, "header_timeout_s": 1, "body_timeout_s": 1}
    handle = serve(serve_config(tmp_path, {"v1": stable.url}, gateway=timeouts), nofile=256)
    host, port = _host_port(handle.gateway_url)
    flood = []
    for i in range(FLOOD):
        reader, writer = await asyncio.open_connection(host, port)
        if i % 2:  # every other one sends half a request head and stops
            writer.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: gw\r\nContent-Le")
        flood.append((reader, writer))

    auth = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # with the flood held open, the control API answers, from the store
        async with session.get(handle.api_url + "/api/v1/models", headers=auth) as resp:
            assert resp.status == 200
            assert [m["model"] for m in await resp.json()] == ["m"]

        # every flooding connection is refused or timed out by the gateway, none held
        answers = await asyncio.wait_for(
            asyncio.gather(*(_until_closed(reader) for reader, _ in flood)), BOUND_S
        )
        for _, writer in flood:
            writer.close()
        kinds = Counter(a.split(b"\r\n")[0].decode() or "closed" for a in answers)
        refused, overdue = "HTTP/1.1 503 Service Unavailable", "HTTP/1.1 408 Request Timeout"
        assert set(kinds) <= {refused, overdue, "closed", "reset"}, kinds
        assert kinds[refused] > 0 and kinds[overdue] > 0, (kinds, handle.log()[-3000:])

        # and the gateway serves again
        body = {"instances": [IRIS_ROW]}
        async with session.post(handle.gateway_url + "/v1/models/m:predict", json=body) as resp:
            assert resp.status == 200
            assert (await resp.json())["predictions"] == [0]
        async with session.get(handle.api_url + "/api/v1/rollouts", headers=auth) as resp:
            assert resp.status == 200

    assert handle.stop() == 0
    log = handle.log()
    assert "gateway at its connection cap" in log
    assert "unable to open database file" not in log
    assert "Too many open files" not in log
