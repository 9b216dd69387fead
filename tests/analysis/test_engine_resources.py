"""Evaluator.observe_resources on a real store: requests counted per version's processes
from the log, windows closed into cpu/memory samples, and a restart that keeps them exact."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from coalmine.analysis import Criterion
from coalmine.analysis.engine import Evaluator
from coalmine.analysis.sources.resources import Reading
from coalmine.log.record import PredictionRecord
from coalmine.store.predictions import insert_batch

MB = 2**20
CRITERIA = [Criterion(metric="cpu"), Criterion(metric="memory")]


def _calls(engine: Engine, start: int, n: int) -> None:
    """n requests: canary v2 and stable v1 alternately, plus a baseline-role v1 row for
    each (another instance of v1, whose requests v1's processes did not serve)."""
    rows = []
    for i in range(start, start + n):
        version, role = ("v2", "canary") if i % 2 else ("v1", "stable")
        for v, r in ((version, role), ("v1", "baseline")):
            rows.append(PredictionRecord(
                request_id=f"r{i}", model="m", version=v, role=r, ts=1000.0 + i,
                latency_ms=5.0, status=200, prediction=0, canary_weight_bp=5000,
            ))  # fmt: skip
    insert_batch(engine, rows)


def _evaluator(engine: Engine) -> Evaluator:
    return Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                     mode="canary", max_slices=0)  # fmt: skip


def _reading(version: str, served: int) -> Reading:
    # v2 spends 3 ms of CPU per request, v1 1 ms
    if version == "v2":
        return Reading(0.003 * served, 90 * MB)
    return Reading(0.001 * served, 80 * MB)


def test_windows_count_each_versions_own_requests_and_survive_a_restart(
    store_engine: Engine,
) -> None:
    ev = _evaluator(store_engine)
    logged = [0]  # calls logged so far; each version's processes served half of them
    read: list[str] = []

    def log(n: int) -> None:
        _calls(store_engine, logged[0], n)
        logged[0] += n

    def reading(*, down: str = "") -> Callable[[str], Reading | None]:
        def one(version: str) -> Reading | None:
            read.append(version)
            return None if version == down else _reading(version, logged[0] // 2)

        return one

    log(500)  # before the first reading: not attributed to any window
    ev.observe_resources(reading())
    for _ in range(3):
        log(80)  # 40 requests to each version
        ev.observe_resources(reading())
    ev = Evaluator.from_state(store_engine, json.loads(json.dumps(ev.state_dict())))
    for _ in range(4):
        log(80)
        ev.observe_resources(reading())
    assert read == ["v2", "v1"] * 8
    # a window not yet due is not read (the scrape's own CPU stays out of small windows)
    log(20)  # 10 requests each: under the 20 a window needs
    ev.observe_resources(reading())
    assert len(read) == 16
    log(60)  # now due; v1 cannot be read this time
    ev.observe_resources(reading(down="v1"))
    assert read[16:] == ["v2", "v1"]
    cand = ev.analysis.stats.slices[""].candidate.pooled("cpu")
    base = ev.analysis.stats.slices[""].baseline.pooled("cpu")
    assert (cand.n, base.n) == (8, 7)  # one window a round each, across the restart
    assert cand.mean == pytest.approx(3.0) and base.mean == pytest.approx(1.0)
    results = {r.name: r for r in ev.evaluate().results if r.slice is None}
    assert results["cpu"].verdict.value == "FAIL"  # 3× the CPU per request
    assert results["memory"].verdict.value == "PASS"  # 90 MB within 1.25 × 80 MB
    assert results["cpu"].n_candidate == 8 and results["memory"].n_baseline == 7
