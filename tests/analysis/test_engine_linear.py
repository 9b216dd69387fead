"""Regression test for the quadratic shadow pair query (fixed in 654007c): the pair and
noise-floor triple queries join the prediction log to itself on request_id, and SQLite
will happily walk the (model, id) index over every earlier row for each new row instead
(minutes at 20k rows) unless the joined sides' model test bypasses that index.

Counted, not timed: SQLite's progress handler is called every 1,000 virtual-machine
instructions, so the count is the work a query did, the same on any machine. A log 10×
larger must cost about 10× (linear), not 100× (quadratic); a budget stops a regression
early instead of letting the test run for minutes.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, event, insert

from coalmine.analysis import Criterion
from coalmine.analysis.engine import Evaluator
from coalmine.log.record import PredictionRecord
from coalmine.store.engine import open_engine
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback

CRITERIA = [Criterion(metric="accuracy", margin=0.01), Criterion(metric="agreement", margin=0.01)]
ROLES = (("v1", "stable"), ("v2", "shadow"), ("v1", "baseline"))


class Budget(Exception):
    pass


def _log(path: Path, rows: int) -> str:
    """A shadow log with a baseline: `rows` prediction rows (three per request, the three
    roles' rows interleaved as a gateway logs them) and a label per request."""
    url = f"sqlite:///{path}"
    engine = open_engine(url)
    rng = np.random.default_rng(rows)
    n = rows // 3
    records = []
    for i in range(n):
        y = int(rng.integers(0, 2))
        for version, role in ROLES:
            records.append(PredictionRecord(
                request_id=f"r{i}", model="m", version=version, role=role, ts=1000.0 + i,
                latency_ms=20.0, status=200, prediction=y if rng.random() < 0.9 else 1 - y,
                slices={"region": "eu" if i % 2 else "us"},
            ))  # fmt: skip
    # other models' traffic in the same table, which the model filter must skip cheaply
    records += [PredictionRecord(request_id=f"o{i}", model="other", version="v1", role="stable",
                                 ts=1000.0, latency_ms=1.0, status=200, prediction=0)
                for i in range(rows // 4)]  # fmt: skip
    insert_batch(engine, records)
    with engine.begin() as conn:
        conn.execute(insert(feedback), [
            {"request_id": f"r{i}", "label": json.dumps(i % 2), "outcomes": None, "ts": 2e3}
            for i in range(n)
        ])  # fmt: skip
    engine.dispose()
    return url


def _work(
    url: str, budget: int | None = None, statements: list[tuple[str, Any]] | None = None
) -> tuple[int, Evaluator]:
    """Thousands of SQLite VM instructions of one full evaluation of the log at `url`
    (and the statements it ran, if a list is given)."""
    engine = create_engine(url)
    calls = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statements is not None:
            statements.append((statement, params))

    def progress() -> int:
        calls[0] += 1
        return int(budget is not None and calls[0] > budget)  # non-zero interrupts SQLite

    @event.listens_for(engine, "connect")
    def _attach(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_progress_handler(progress, 1000)

    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=CRITERIA,
                   mode="shadow", max_slices=2, baseline_role="baseline")  # fmt: skip
    try:
        ev.evaluate()
    except Exception as exc:  # the interrupt surfaces as an OperationalError
        if budget is not None and calls[0] > budget:
            raise Budget(f"over budget: > {budget * 1000:,} SQLite VM instructions") from exc
        raise
    finally:
        engine.dispose()
    return calls[0], ev


def test_shadow_pair_and_triple_queries_cost_linear_in_the_log(tmp_path: Path) -> None:
    small_url, large_url = _log(tmp_path / "small.db", 2_001), _log(tmp_path / "large.db", 20_001)
    statements: list[tuple[str, Any]] = []
    small, ev_small = _work(small_url, statements=statements)
    assert ev_small.triples_read == 667 and ev_small.analysis.stats.slices[""].pairs.pairs == 667
    # linear: ~10×; the quadratic plan is ~100× (and minutes): stop it at 30×
    large, ev_large = _work(large_url, budget=30 * small)
    assert ev_large.triples_read == 6_667
    assert ev_large.analysis.stats.slices[""].pairs.pairs == 6_667
    ratio = large / small
    print(f"\nSQLite work, 20k vs 2k shadow rows (with baseline): {large} vs {small} ×1000 "
          f"instructions, ratio {ratio:.1f}")  # fmt: skip
    assert ratio < 20

    # and why: each self-join on request_id is driven by the new rows, the other sides found
    # through the request_id index (the pair query and the noise-floor triple query)
    joins = [(sql, params) for sql, params in statements if "JOIN predictions AS q" in sql]
    assert len(joins) == 2
    with closing(sqlite3.connect(tmp_path / "small.db")) as db:
        for sql, params in joins:
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan[0].startswith("SEARCH p USING INDEX ix_predictions_model_id"), plan
            sides = [step for step in plan if step.startswith(("SEARCH q", "SEARCH r"))]
            assert len(sides) == sql.count("JOIN predictions AS"), plan
            assert all("USING INDEX ix_predictions_request_id" in step for step in sides), plan
