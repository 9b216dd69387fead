"""Stable rows sampled outside rollouts, weighted 1/rate; every other row kept in full."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, text

from coalmine.config import LoggingConfig
from coalmine.log.record import PredictionRecord
from coalmine.log.writer import BatchWriter
from coalmine.store.predictions import count


def rec(i: int, role: str, rollout_id: int | None) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"{role}-{rollout_id}-{i}", model="iris", version="v1", role=role,
        ts=1_700_000_000.0 + i, latency_ms=1.0, status=200, rollout_id=rollout_id,
    )  # fmt: skip


async def test_stable_rows_outside_a_rollout_are_sampled_and_weighted(
    store_engine: Engine,
) -> None:
    writer = BatchWriter(
        store_engine,
        LoggingConfig.model_validate({"stable_sample_rate": 0.25, "flush_interval_s": 0.02}),
    )
    writer._rng = random.Random(7)  # a fixed draw of which rows are kept
    await writer.start()
    for i in range(4000):
        assert writer.submit(rec(i, "stable", None))  # accepted, sampled or not
    in_full = [("canary", 500, None), ("shadow", 200, None), ("stable", 1000, 7),
               ("canary", 300, 7), ("paired", 100, 7)]  # fmt: skip
    for role, n, rollout in in_full:
        for i in range(n):
            writer.submit(rec(i, role, rollout))
    await writer.close()
    assert writer.dropped == 0

    with store_engine.connect() as conn:
        kept = conn.execute(
            text("SELECT count(*), min(sample_weight), max(sample_weight) FROM predictions "
                 "WHERE role = 'stable' AND rollout_id IS NULL")
        ).one()  # fmt: skip
        weighted_others = conn.execute(
            text("SELECT count(*) FROM predictions WHERE sample_weight IS NOT NULL "
                 "AND NOT (role = 'stable' AND rollout_id IS NULL)")
        ).scalar_one()  # fmt: skip
    sd = math.sqrt(4000 * 0.25 * 0.75)
    assert abs(kept[0] - 1000) < 5 * sd
    assert (kept[1], kept[2]) == (4.0, 4.0)
    assert kept[0] + writer.sampled_out == 4000
    assert weighted_others == 0  # every other row stands for itself (NULL weight)
    # during a rollout every row is kept: the judgement reads stable in full
    assert count(store_engine, "iris", role="stable") == kept[0] + 1000
    assert count(store_engine, "iris", role="canary") == 800
    assert count(store_engine, "iris", role="shadow") == 200
    assert count(store_engine, "iris", role="paired") == 100
    # the weighted count estimates the calls made
    weighted = count(store_engine, "iris", role="stable", weighted=True)
    assert abs(weighted - 5000) < 5 * 4 * sd
    assert count(store_engine, "iris", role="canary", weighted=True) == 800


async def test_rate_one_keeps_everything(store_engine: Engine) -> None:
    writer = BatchWriter(store_engine, LoggingConfig.model_validate({"flush_interval_s": 0.02}))
    for i in range(300):
        writer.submit(rec(i, "stable", None))
    await writer.close()
    assert count(store_engine, "iris") == count(store_engine, "iris", weighted=True) == 300
    assert writer.sampled_out == 0


@pytest.mark.parametrize("rate", [0, -0.5, 1.5])
def test_a_rate_outside_0_to_1_is_refused_naming_the_field(rate: float) -> None:
    with pytest.raises(ValidationError, match="stable_sample_rate"):
        LoggingConfig.model_validate({"stable_sample_rate": rate})


async def test_stable_rows_of_a_canary_step_are_sampled_when_asked(store_engine: Engine) -> None:
    """`stable_sample_rate_during_rollouts`: stable calls while a canary split is in force;
    a shadow step's (0% canary) stable rows are the shadow's pairs and stay in full, and
    no canary, paired, baseline or shadow row is ever sampled."""
    writer = BatchWriter(
        store_engine,
        LoggingConfig.model_validate(
            {"stable_sample_rate_during_rollouts": 0.1, "flush_interval_s": 0.02}
        ),
    )
    writer._rng = random.Random(3)
    await writer.start()
    for i in range(5000):
        r = rec(i, "stable", 7)
        r.canary_weight_bp = 500
        writer.submit(r)
    for role, n, weight_bp in [("stable", 300, 0), ("stable", 200, None), ("canary", 400, 500),
                               ("paired", 100, 500), ("baseline", 100, 500),
                               ("shadow", 100, 0)]:  # fmt: skip
        for i in range(n):
            r = rec(i, role, None if weight_bp is None else 7)
            r.request_id += f"-{weight_bp}"
            r.canary_weight_bp = weight_bp or 0
            writer.submit(r)
    await writer.close()
    with store_engine.connect() as conn:
        kept = conn.execute(
            text("SELECT count(*), min(sample_weight), max(sample_weight) FROM predictions "
                 "WHERE role = 'stable' AND canary_weight_bp = 500")
        ).one()  # fmt: skip
        others = conn.execute(
            text("SELECT count(*) FROM predictions WHERE sample_weight IS NOT NULL "
                 "AND NOT (role = 'stable' AND canary_weight_bp = 500)")
        ).scalar_one()  # fmt: skip
    assert abs(kept[0] - 500) < 5 * math.sqrt(5000 * 0.1 * 0.9)
    assert (kept[1], kept[2]) == (10.0, 10.0)
    assert others == 0
    # shadow-step stable rows and outside-rollout rows (rate 1 by default) kept in full
    assert count(store_engine, "iris", role="stable") == kept[0] + 300 + 200
    for role, n in [("canary", 400), ("paired", 100), ("baseline", 100), ("shadow", 100)]:
        assert count(store_engine, "iris", role=role) == n


def test_the_rollout_rate_is_refused_outside_0_to_1_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="stable_sample_rate_during_rollouts"):
        LoggingConfig.model_validate({"stable_sample_rate_during_rollouts": 0})
