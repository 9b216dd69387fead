"""`coalmine demo` end to end: real processes, real traffic, the real controller decides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_promotes_v2_and_rolls_back_v3_naming_the_region(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "demo", "--speed", "3", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=400,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "demo OK" in output
    assert "v2: promoted" in output
    assert "v3: rolled_back" in output and "region=south" in output
    # The reports exist and the processes are gone (their logs are closed and complete).
    assert sorted(p.name for p in work.glob("report-*.html")) == ["report-1.html", "report-2.html"]
    assert "Traceback" not in (work / "coalmine-serve.log").read_text()
