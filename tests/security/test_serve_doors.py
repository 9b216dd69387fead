"""A real `coalmine serve` with every door locked as SECURITY.md describes: the control API
over TLS with its token and a body bound, the feedback endpoint with its own token. Each
token opens only its door, oversized requests are refused, and neither token is logged."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, Traffic, serve_estimator

API_TOKEN = "Api7XfR2mLp9WvK4sT8nB3yH6jD1cG5eQ"  # distinctive: found if it leaks
FEEDBACK_TOKEN = "Fdb9Lm2Qx7WpR4sK8vT3nB6yH1jD5cGz"


def _self_signed(where: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_every_door_of_coalmine_serve(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    config = {
        "gateway": {"feedback_token": FEEDBACK_TOKEN},
        "api": {"tls_cert_file": str(cert), "tls_key_file": str(key), "max_body_bytes": 4096},
    }
    trusted = ssl.create_default_context(cafile=str(cert))
    with (
        serve_estimator(model, "iris", "v1") as v1,
        LocalCoalmine({"iris": {"v1": v1}}, config=config, token=API_TOKEN) as cm,
        httpx.Client(verify=trusted) as https,
    ):
        # the control API speaks TLS only, and its token opens it
        assert cm.api_url.startswith("https://")
        models = f"{cm.api_url}/api/v1/models"
        assert https.get(models, headers={"Authorization": f"Bearer {API_TOKEN}"}).is_success
        with pytest.raises(httpx.TransportError):
            httpx.get(models.replace("https://", "http://"), timeout=5)
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is not trusted
            httpx.get(models, timeout=5)
        wrong = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}  # the other door's token
        assert https.get(models, headers=wrong).status_code == 403
        # sizes: a body over api.max_body_bytes and an oversized head are refused
        big = https.post(f"{cm.api_url}/api/v1/rollouts", content=b"x" * 5000)
        assert big.status_code == 413
        assert https.get(models, headers={"X-Big": "x" * 1_000_000}).status_code == 400

        # the feedback token holder labels; nobody else does, the API token included
        with Traffic(
            cm.gateway_url, "iris", X, y, rate=50, label_delay=0.1, feedback_token=FEEDBACK_TOKEN
        ) as traffic:
            deadline = time.monotonic() + 30
            while traffic.labelled < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert traffic.labelled >= 20, cm.logs()[-2000:]
        feedback = f"{cm.gateway_url}/v1/feedback"
        label = {"request_id": "anything", "label": 1}
        for auth in ({}, {"Authorization": f"Bearer {API_TOKEN}"}):
            assert httpx.post(feedback, json=label, headers=auth).status_code == 401
        logs = cm.logs()
    assert API_TOKEN[:12] not in logs and FEEDBACK_TOKEN[:12] not in logs
