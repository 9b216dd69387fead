"""A real control API (uvicorn on loopback, SQLite file store) over a prediction log seeded
with rows as a collector writes them when Argo Rollouts or Flagger routes the traffic.

`seed(...)` writes real rows through the store's own batch insert and real labels through
the feedback store: `n` calls of each version, the candidate erring and mislabelling at
its own rates, seeded. Versions are logged with role "stable" whatever they are, as a
collector that does not know the split would; the judge tells them apart by version.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from coalmine.config import parse_config
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.feedback import FeedbackStore
from coalmine.store.predictions import insert_batch
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "control-token-for-tests"
JUDGE_TOKEN = "judge-token-for-tests"


@dataclass
class Stack:
    url: str
    engine: Engine


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API and store per test module: tests give each scenario its own versions."""
    tmp_path = tmp_path_factory.mktemp("judge")
    versions = ["v1", "v2", "podinfo-primary"]
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "models": [
                {
                    "name": name,
                    "versions": [
                        {"name": v, "url": f"http://127.0.0.1:{9001 + i}"}
                        for i, v in enumerate(versions)
                    ],
                    "routing": {"stable": stable},
                }
                for name, stable in (("iris", "v1"), ("podinfo", "podinfo-primary"))
            ],
        }
    )
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    try:
        with control_api(engine, TOKEN, judge_token=JUDGE_TOKEN) as url:
            yield Stack(url, engine)
    finally:
        engine.dispose()


def seed(
    engine: Engine,
    model: str,
    version: str,
    n: int,
    *,
    error_rate: float = 0.0,
    accuracy: float = 0.9,
    seed: int = 0,
    start: float | None = None,
    weight_bp: int = 0,
    every: float = 0.01,
) -> None:
    """`n` calls of `version`, one every `every` s from `start`, labels for the answered."""
    rng = random.Random(seed)
    t0 = time.time() - 60 if start is None else start
    records, labels = [], []
    for i in range(n):
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        failed = rng.random() < error_rate
        truth = rng.randrange(3)
        said = truth if rng.random() < accuracy else (truth + 1) % 3
        records.append(
            PredictionRecord(
                request_id=rid, model=model, version=version, role="stable", ts=t0 + i * every,
                latency_ms=20 + rng.random() * 5, status=500 if failed else 200,
                error_class="http_5xx" if failed else None,
                prediction=None if failed else said, canary_weight_bp=weight_bp,
            )
        )  # fmt: skip
        if not failed:
            labels.append({"request_id": rid, "label": truth})
    insert_batch(engine, records)
    results = FeedbackStore(engine).add(labels)
    assert all(r.ok for r in results)
