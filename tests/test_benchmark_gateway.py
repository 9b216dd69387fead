"""benchmarks/gateway.py's nginx + logging sidecars run, briefly: the wiring really logs.

Real nginx, wrk, sidecar processes and control API on loopback, as the benchmark starts
them; skipped where nginx, wrk or the perf-baseline configs are missing. No timing asserted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_gateway", ROOT / "benchmarks" / "gateway.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _baseline() -> Path | None:
    for candidate in (
        os.environ.get("COALMINE_PERF_BASELINE"),
        ROOT.parent / "shared" / "perf-baseline",
        Path("/work/shared/perf-baseline"),
    ):
        if candidate and (Path(candidate) / "post.lua").exists():
            return Path(candidate)
    return None


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("nginx", "wrk", "taskset")) or _baseline() is None,
    reason="needs nginx, wrk, taskset and ../shared/perf-baseline",
)
def test_the_sidecar_run_logs_a_production_and_a_shadow_row_per_request(tmp_path: Path) -> None:
    bench = _bench()
    bench.BASELINE = _baseline()
    bench.PYTHON = sys.executable
    for sub in ("logs", "run"):
        (tmp_path / sub).mkdir()
    stack = bench.Stack(tmp_path)
    try:
        stack.start_upstreams()
        result, one, logged = bench.run_sidecars(stack, 4, 1, "redacted")
    finally:
        stack.stop_all()
    assert result.requests > 0 and one.requests > 0
    assert result.cpu_us is not None and result.cpu_us > 0
    assert logged.error is None
    assert set(logged.cpu_us_by_process) == {
        "API",
        "sidecar v1",
        "sidecar v2",
        "sidecar v3",
        "nginx",
    }
    assert logged.expected == 2 * result.requests
    production = logged.by_role.get("stable", 0) + logged.by_role.get("canary", 0)
    # requests wrk left in flight at its end may add a few rows
    assert result.requests <= production <= result.requests + 4
    assert result.requests <= logged.by_role.get("shadow", 0) <= result.requests + 4
    assert logged.by_role.get("canary", 0) > 0  # the 90/10 split reached the canary's sidecar
    assert logged.paired >= result.requests  # the shadow's row has production's request id
