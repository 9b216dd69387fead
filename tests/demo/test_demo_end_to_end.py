"""`coalmine demo` end to end: real processes, real traffic, the real controller decides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(720)
def test_demo_promotes_v2_and_rolls_back_v3_naming_the_region_and_v4_naming_memory(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo"
    # PYTHONPATH kept: a checkout run with it imports its own coalmine in the child too
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})
    run = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "demo", "--speed", "3", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=700,
        env=env,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "demo OK" in output
    assert "v2: promoted" in output
    assert "v3: rolled_back" in output and "region=south" in output
    # v4 leaks memory (serve-model --leak-kb): its peak against production's, read from
    # the processes, found failing (a rollback at the deadline would fail "demo OK")
    assert "v4: rolled_back" in output and "shadow memory" in output
    # The reports exist and the processes are gone (their logs are closed and complete).
    reports = sorted(p.name for p in work.glob("report-*.html"))
    assert reports == ["report-1.html", "report-2.html", "report-3.html"]
    # every report draws CPU and memory per version, from the versions' own /metrics
    assert '"resources:v4"' in (work / "report-3.html").read_text()
    assert "Traceback" not in (work / "coalmine-serve.log").read_text()
