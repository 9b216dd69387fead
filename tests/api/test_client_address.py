"""The SDK and the CLI find the control API from the config file `coalmine serve` was given,
and a connection error names the URL it tried (both failed before: the CLI needed
`--api-url` on every command, and said only "Connection refused")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coalmine.client import Client, CoalmineConnectionError, api_address
from coalmine.testing import LocalCoalmine

COALMINE = [sys.executable, "-m", "coalmine.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, port: int, host: str = "127.0.0.1", token: str | None = None) -> Path:
    api: dict[str, object] = {"host": host, "port": port}
    if token:
        api["token"] = token
    path = tmp_path / "coalmine.yaml"
    models = [{"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}]}]
    path.write_text(yaml.safe_dump({"api": api, "models": models}))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_")}
    return {**env, "COLUMNS": "200", **extra}


def test_api_address_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COALMINE_API_URL", "COALMINE_CONFIG", "COALMINE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert api_address() == ("http://127.0.0.1:8900", None)
    path = _config(tmp_path, 9123, host="0.0.0.0", token="t0ken")
    assert api_address(path) == ("http://127.0.0.1:9123", "t0ken")
    monkeypatch.setenv("COALMINE_CONFIG", str(path))
    with Client() as client:
        assert client.url == "http://127.0.0.1:9123"
    with Client("http://10.1.2.3:1") as client:  # an explicit URL wins
        assert client.url == "http://10.1.2.3:1"


def test_a_connection_error_names_the_url(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with Client(url, "t") as client, pytest.raises(CoalmineConnectionError) as caught:
        client.models()
    assert url in str(caught.value)

    done = subprocess.run(
        [*COALMINE, "rollout", "list", "--config", str(_config(tmp_path, port))],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert url in done.stderr, done.stderr


def test_the_cli_reaches_a_non_default_api_port_through_config(tmp_path: Path) -> None:
    port = _free_port()
    with LocalCoalmine(
        {"m": {"v1": "http://127.0.0.1:9"}}, workdir=tmp_path, config={"api": {"port": port}}
    ) as cm:
        assert cm.api_url.endswith(f":{port}")
        for how in (["--config", str(cm.config_path)], []):
            env = _env() if how else _env(COALMINE_CONFIG=str(cm.config_path))
            done = subprocess.run(
                [*COALMINE, "rollout", "list", "--json", *how],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "[]"
