"""The control API's token is compared in constant time, on digests of one length."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coalmine.store.engine import open_engine
from tests.control_api import control_api

TOKEN = "Ctl4Wq8Zp2Lm7Xv3Rk9Ts6Nb1Yh5Jd0G"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with control_api(engine, TOKEN) as url:
            yield url
    finally:
        engine.dispose()


def test_every_check_goes_through_compare_digest_on_equal_lengths(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    statuses = []
    for token in ("x", TOKEN[:-1], TOKEN + "x", TOKEN):
        answer = httpx.get(f"{api}/api/v1/models", headers={"Authorization": f"Bearer {token}"})
        statuses.append(answer.status_code)
        assert TOKEN[:12] not in answer.text  # never echoed
    assert statuses == [403, 403, 403, 200]
    assert len(compared) == 4
    assert {(len(a), len(b)) for a, b in compared} == {(32, 32)}  # no length to time
