"""The shipped examples run as users run them (real processes, real SQLite), so the README's
commands keep working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_gateway_quickstart_logs_every_role_and_accepts_every_label() -> None:
    done = _run("gateway_quickstart.py")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "feedback accepted: 300, errors: 0" in done.stdout
    calls = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^v\d\s+(stable|canary|shadow)\s+(\d+)", done.stdout, re.M)
    }
    assert calls["stable"] + calls["canary"] == 300 and calls["shadow"] == 300
    assert 20 < calls["canary"] < 120  # a 20% sticky canary over 100 users


@pytest.mark.long  # ~2 min; tests/test_testing.py runs the same pipeline path in make test
def test_retraining_pipeline_local_promotes_the_retrained_model() -> None:
    done = _run("retraining_pipeline.py", "--local")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PROMOTED: v2 is the champion" in done.stdout
    assert "promoting → promoted" in done.stdout
