"""The log's batches through PostgreSQL COPY: the same rows as an INSERT writes (awkward text
included), in id order across writers, and a lost connection raised as a retryable error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy import exc as sa_exc

from coalmine.log.record import PredictionRecord
from coalmine.store.predictions import copy_batch_in, insert_batch, read_since, write_batch
from coalmine.store.schema import predictions


def record(i: int, **overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": f"r{i}",
        "model": "iris",
        "version": "v2",
        "role": "canary",
        "ts": 1_700_000_000.25 + i,
        "latency_ms": 1.5,
        "status": 200,
        "prediction": {"predictions": [i % 3]},
        "input": '{"x":1}',
        "slices": {"device": "ios"},
        "canary_weight_bp": 1000,
        "rollout_id": 4,
    }
    values.update(overrides)
    return PredictionRecord(**values)  # type: ignore[arg-type]


# what COPY's text format must escape: tabs, newlines, backslashes, \N, quotes, non-ASCII
AWKWARD = [
    record(0),
    record(1, input="a\tb\nc\\d \\N \"q\" 'é' 日本", prediction={"p": "x\ty\\n"}),
    record(2, input=None, prediction=None, error_class="timeout", status=0, rollout_id=None),
    record(3, request_id="x" * 500, slices={}, scores={"probabilities": [0.25, 0.75]}),
    record(4, input="", latency_ms=0.0, canary_weight_bp=0),
]


def columns(engine: Engine) -> list[tuple[object, ...]]:
    return [tuple(r)[1:] for r in read_since(engine, "iris", 0)]  # all but the id


def test_copy_writes_exactly_what_insert_writes(store_engine: Engine) -> None:
    assert write_batch(store_engine, AWKWARD) == len(AWKWARD)
    copied = columns(store_engine)
    with store_engine.begin() as conn:
        conn.execute(predictions.delete())
    assert insert_batch(store_engine, AWKWARD) == len(AWKWARD)
    assert columns(store_engine) == copied
    assert copied[1][9] == AWKWARD[1].input  # the input column, byte for byte
    assert copied[2][8] is None and copied[2][9] is None  # NULLs stay NULL, not "\\N"


def test_copy_of_nothing_writes_nothing(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        assert copy_batch_in(conn, []) == 0
    assert read_since(store_engine) == []


@pytest.mark.postgres
def test_concurrent_copy_writers_commit_in_id_order(store_engine: Engine) -> None:
    """Ids readable in increasing order (the readers page by id) with 4 writers at once."""
    if store_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")

    def write(w: int) -> None:
        for b in range(10):
            write_batch(store_engine, [record(w * 10_000 + b * 100 + i) for i in range(100)])

    seen: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(write, w) for w in range(4)]
        while not all(f.done() for f in futures):
            after = seen[-1] if seen else 0
            seen += [r.id for r in read_since(store_engine, "iris", after)]
        for f in futures:
            f.result()
    seen += [r.id for r in read_since(store_engine, "iris", seen[-1] if seen else 0)]
    assert len(seen) == len(set(seen)) == 4_000  # none skipped, none read twice


@pytest.mark.postgres
def test_a_connection_lost_mid_copy_is_a_retryable_error(store_engine: Engine) -> None:
    if store_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    with pytest.raises(sa_exc.OperationalError) as caught, store_engine.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with store_engine.begin() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        copy_batch_in(conn, [record(1)])
    assert caught.value.connection_invalidated  # the writer retries it; it drops nothing
    # the pool hands out a working connection next
    assert write_batch(store_engine, [record(2)]) == 1
    with store_engine.connect() as conn:
        assert conn.execute(select(predictions.c.request_id)).scalars().all() == ["r2"]
