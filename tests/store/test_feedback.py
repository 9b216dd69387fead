"""Feedback contract on every backend: per-item errors, late and out-of-order joins."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from coalmine.log.record import PredictionRecord
from coalmine.store.feedback import UNKNOWN_REQUEST_ID, FeedbackStore, joined
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback


def call(request_id: str, version: str, role: str, model: str = "iris") -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        model=model,
        version=version,
        role=role,
        ts=1_700_000_000.0,
        latency_ms=2.0,
        status=200,
        prediction={"predictions": [version]},
        slices={"device": "ios"},
    )


def seed(engine: Engine) -> None:
    insert_batch(
        engine,
        [
            call("r1", "v1", "stable"),
            call("r1", "v3", "shadow"),
            call("r2", "v2", "canary"),
            call("r3", "v1", "stable"),
            call("o1", "a", "stable", model="churn"),
        ],
    )


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(feedback)).scalar_one())


def test_add_stores_known_ids_and_reports_each_bad_item(store_engine: Engine) -> None:
    seed(store_engine)
    results = FeedbackStore(store_engine).add(
        [
            {"request_id": "r1", "label": 0},
            {"request_id": "r9", "label": 1},
            {"request_id": "r2", "outcomes": {"clicked": 1, "revenue": 12.5}},
            {"request_id": "r3"},
            {"label": 1},
            {"request_id": "r3", "outcomes": {"revenue": "lots"}},
            "not an object",
        ]
    )
    assert [r.ok for r in results] == [True, False, True, False, False, False, False]
    assert results[1].as_dict() == {
        "index": 1,
        "request_id": "r9",
        "status": "error",
        "error": UNKNOWN_REQUEST_ID,
    }
    assert "give a label, outcomes, or both" in (results[3].error or "")
    assert (results[4].request_id, results[4].error) == (None, "request_id: Field required")
    assert "outcomes.revenue" in (results[5].error or "")
    assert results[6].error == "item must be a JSON object"
    assert results[0].feedback_id is not None and results[2].feedback_id is not None
    assert stored(store_engine) == 2  # nothing unknown or malformed was kept


def test_join_gives_every_version_that_saw_the_request(store_engine: Engine) -> None:
    seed(store_engine)
    FeedbackStore(store_engine).add(
        [{"request_id": "r1", "label": "setosa"}, {"request_id": "o1", "label": 1}]
    )
    rows = joined(store_engine, "iris")
    assert {(r.request_id, r.version, r.role, r.label) for r in rows} == {
        ("r1", "v1", "stable", "setosa"),
        ("r1", "v3", "shadow", "setosa"),
    }
    assert rows[0].prediction == {"predictions": [rows[0].version]}
    assert rows[0].slices == {"device": "ios"}
    assert [r.request_id for r in joined(store_engine, "churn")] == ["o1"]


def test_late_and_out_of_order_feedback_latest_wins_and_outcomes_merge(
    store_engine: Engine,
) -> None:
    seed(store_engine)
    store = FeedbackStore(store_engine)
    # r2's outcome arrives before its label; r1 is labelled, then corrected later
    store.add([{"request_id": "r2", "outcomes": {"clicked": 1}}, {"request_id": "r1", "label": 0}])
    first = joined(store_engine, "iris")
    cursor = max(r.feedback_id for r in first)
    assert {r.request_id: (r.label, r.outcomes) for r in first} == {
        "r2": (None, {"clicked": 1.0}),
        "r1": (0, {}),
    }
    store.add(
        [
            {"request_id": "r1", "label": 2},  # the correction
            {"request_id": "r2", "label": 1, "outcomes": {"revenue": 3.5}},
            {"request_id": "r2", "outcomes": {"clicked": 0}},
        ]
    )
    later = joined(store_engine, "iris", after_feedback_id=cursor)
    assert {r.request_id: (r.label, r.outcomes) for r in later} == {
        "r1": (2, {}),
        "r2": (1, {"clicked": 0.0, "revenue": 3.5}),
    }
    assert joined(store_engine, "iris", after_feedback_id=max(r.feedback_id for r in later)) == []


def test_join_pages_by_feedback_id_consistently(store_engine: Engine) -> None:
    seed(store_engine)
    store = FeedbackStore(store_engine)
    store.add([{"request_id": rid, "label": i} for i, rid in enumerate(["r1", "r2", "r3", "r1"])])
    cursor, seen = 0, []
    while page := joined(store_engine, "iris", after_feedback_id=cursor, limit=1):
        cursor = max(r.feedback_id for r in page)
        seen.append({(r.request_id, r.label) for r in page})
    # r1's first page shows its label then; its correction comes on its own later page
    assert seen == [{("r1", 0)}, {("r2", 1)}, {("r3", 2)}, {("r1", 3)}]
