"""Request ids the gateway makes cannot be predicted, so labels cannot be forged for them.

Before, their random bits came from the process's Mersenne Twister, whose state can be
recovered from its outputs (and every id is echoed to its client in X-Request-ID).
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from coalmine.gateway import ids
from tests.gateway.conftest import StartGateway, Upstream, make_config


def test_the_random_bits_come_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []

    def urandom(n: int) -> bytes:
        drawn.append(n)
        return bytes([0xA5]) * n

    monkeypatch.setattr(os, "urandom", urandom)
    monkeypatch.setattr(ids, "_pool", ids._RandomPool())  # empty: the next id draws
    made = ids.new_request_id()
    assert drawn == [10 * 400]  # 80 bits an id, drawn for 400 ids at once
    ids.new_request_id()
    assert drawn == [4000]  # the next id comes from the same draw
    parsed = uuid.UUID(hex=made)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    # every random bit is the OS's, but for the 6 bits of version and variant
    low80 = int(made, 16) & ((1 << 80) - 1)
    mask = (1 << 80) - 1 & ~((0xF << 76) | (0x3 << 62))
    assert low80 & mask == int.from_bytes(bytes([0xA5]) * 10, "big") & mask


async def test_gateway_ids_do_not_depend_on_the_process_prng(
    tmp_path: Path,
    upstreams: dict[str, Upstream],
    start_gateway: StartGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await start_gateway(make_config(tmp_path, {"v1": upstreams["v1"].url}))
    # a Mersenne Twister an attacker has reconstructed: it predicts every draw (here: zeros)
    monkeypatch.setattr(random.Random, "getrandbits", lambda self, k: 0)
    made = []
    for _ in range(20):
        status, headers, _ = await gw.post("/v1/models/m:predict")
        assert status == 200
        made.append(headers["X-Request-ID"])
    random_parts = {m[12:] for m in made}
    assert len(random_parts) == len(made), made  # not derived from the PRNG's draws
    assert all(uuid.UUID(hex=m).version == 7 for m in made)
    assert [m[:12] for m in made] == sorted(m[:12] for m in made)  # still time-ordered
