"""A rollout whose analysis keeps raising is not held in place for ever.

The real controller and a real SQLite store; the judge here is a stand-in that raises on
every evaluation, as the analysis does when (say) the prediction log is unreadable — the
engine's own failure modes are tested in tests/analysis. What is under test is what the
controller does with a judgement that never comes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import Engine

from coalmine.config import parse_config
from coalmine.rollout.controller import Controller
from coalmine.rollout.machine import Evidence, Phase
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository


class RaisingJudge:
    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        self.calls += 1
        raise RuntimeError("prediction log unreadable")

    def forget(self, rollout_id: int) -> None:
        pass


def _engine(tmp_path: Path) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    config = parse_config(
        {"models": [{"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                     "routing": {"stable": "v1"}}]}
    )  # fmt: skip
    RouteRepository(engine).seed_from_config(config)
    return engine


async def _run(engine: Engine, spec: dict[str, object], ticks: int) -> RolloutRecord:
    judge = RaisingJudge()
    clock = itertools.count(1000.0, 1.0)
    ctl = Controller(engine, judge, clock=lambda: next(clock))
    repo = RolloutRepository(engine)
    rec = repo.create("m", "v2", "http://127.0.0.1:10", parse_spec(spec))
    for _ in range(ticks):
        await ctl.tick()
        if repo.get(rec.id).state.phase in (Phase.PAUSED, Phase.ROLLED_BACK):
            break
    assert judge.calls > 3
    return repo.get(rec.id)


async def test_failing_analysis_rolls_back_at_the_step_max_with_on_inconclusive_fail(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)
    spec = {
        "shadow": {"enabled": False},
        "interval": 1,
        "canary": {"min_duration": 2, "max_duration": 20, "on_inconclusive": "fail"},
    }
    try:
        after = await _run(engine, spec, 200)
        assert after.state.phase == Phase.ROLLED_BACK
        assert "analysis keeps failing: RuntimeError: prediction log unreadable" in (
            after.state.reason or ""
        )
        assert RouteRepository(engine).get("m").canary_weight_bp == 0  # type: ignore[union-attr]
    finally:
        engine.dispose()


async def test_failing_analysis_holds_and_alerts_by_default(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    spec = {"interval": 1, "shadow": {"min_duration": 2, "max_duration": 20}}
    try:
        after = await _run(engine, spec, 200)
        assert after.state.phase == Phase.PAUSED and after.state.paused_phase == Phase.SHADOW
        events = RolloutRepository(engine).events(after.id)
        assert events[-1]["kind"] == "hold"
        assert "analysis keeps failing" in events[-1]["reason"]
    finally:
        engine.dispose()
