"""The demo itself, end to end, as a user runs it (faster with --speed): real model
processes, `coalmine serve`, real traffic and labels; exit 0 only when v2 was promoted and
v3 rolled back with a reason naming its bad region."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from coalmine.demo.train import BAD_REGION


def test_demo_promotes_the_good_model_and_rolls_back_the_bad_one(tmp_path: Path) -> None:
    coalmine = Path(sys.executable).parent / "coalmine"
    run = subprocess.run(
        [str(coalmine), "demo", "--speed", "4", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=420,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "demo OK" in out
    assert "v2: promoted (expected promoted)" in out
    assert "v3: rolled_back (expected rolled_back)" in out
    assert f"region={BAD_REGION}" in out
    reports = sorted(tmp_path.glob("report-*.html"))
    assert len(reports) == 2 and all(r.stat().st_size > 100_000 for r in reports)
