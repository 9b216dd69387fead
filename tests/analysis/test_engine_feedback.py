"""Feedback in several items per request (a label, later outcomes, a corrected label), read
incrementally by the Evaluator on every backend (SQLite file and PostgreSQL).

The rule under test (engine.py): each field of a request's feedback — its label, each
named outcome — counts once, when its first value arrives, whatever the order and number
of items and wherever the evaluations and restarts fall.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, insert

from coalmine.analysis import Criterion
from coalmine.analysis.engine import Evaluator
from coalmine.log.record import PredictionRecord
from coalmine.store.feedback import FeedbackStore, first_values, joined
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback

N = 300
CANARY = [
    Criterion(metric="accuracy", margin=0.05),
    Criterion(metric="outcome:clicked", margin=0.05),
    Criterion(metric="outcome:revenue", margin=5.0),
]


def _log(engine: Engine, n: int = N, *, shadow: bool = False, seed: int = 5) -> dict[str, int]:
    """n requests (a 50% canary, or a shadow answering all); returns request_id -> label."""
    rng = np.random.default_rng(seed)
    records, labels = [], {}
    for i in range(n):
        rid = f"r{i}"
        y = labels[rid] = int(rng.integers(0, 2))
        arms = [("v1", "stable"), ("v2", "shadow")] if shadow else [
            ("v2", "canary") if i % 2 else ("v1", "stable")
        ]  # fmt: skip
        for version, role in arms:
            records.append(PredictionRecord(
                request_id=rid, model="m", version=version, role=role, ts=1000.0 + i,
                latency_ms=20.0, status=200, prediction=y if rng.random() < 0.9 else 1 - y,
                canary_weight_bp=0 if shadow else 5000,
            ))  # fmt: skip
    insert_batch(engine, records)
    return labels


def _evaluator(engine: Engine, criteria: list[Criterion] = CANARY, **kw: Any) -> Evaluator:
    kw.setdefault("mode", "canary")
    return Evaluator(engine, model="m", candidate="v2", baseline="v1", criteria=criteria,
                     max_slices=0, **kw)  # fmt: skip


def _result(ev: Evaluator, name: str) -> Any:
    return next(r for r in ev.evaluate().results if r.name == name and r.slice is None)


def _n(ev: Evaluator, name: str) -> int:
    r = _result(ev, name)
    return int(r.n_candidate + r.n_baseline)


def test_labels_then_outcomes_in_separate_items_both_count(store_engine: Engine) -> None:
    labels = _log(store_engine)
    ev = _evaluator(store_engine)
    store = FeedbackStore(store_engine)
    assert all(r.ok for r in store.add([{"request_id": k, "label": y} for k, y in labels.items()]))
    assert _n(ev, "accuracy") == N and _n(ev, "outcome:clicked") == 0
    outcomes = [{"request_id": k, "outcomes": {"clicked": i % 3 == 0}}
                for i, k in enumerate(labels)]  # fmt: skip
    assert all(r.ok for r in store.add(outcomes))
    assert _n(ev, "outcome:clicked") == N  # read from the items after each request's label
    assert _n(ev, "accuracy") == N  # and the labels are not counted again


def test_outcomes_then_labels_in_separate_items_both_count(store_engine: Engine) -> None:
    labels = _log(store_engine)
    ev = _evaluator(store_engine)
    store = FeedbackStore(store_engine)
    half = list(labels)[: N // 2]
    # half the outcomes are read before the labels arrive, the other half in the same read
    store.add([{"request_id": k, "outcomes": {"clicked": 1}} for k in half])
    assert _n(ev, "outcome:clicked") == N // 2 and _n(ev, "accuracy") == 0
    store.add([{"request_id": k, "outcomes": {"clicked": 0}} for k in labels if k not in half])
    store.add([{"request_id": k, "label": y} for k, y in labels.items()])
    assert _n(ev, "accuracy") == N
    assert _n(ev, "outcome:clicked") == N
    acc = _result(ev, "accuracy")
    assert 0.8 < acc.candidate_value <= 1 and 0.8 < acc.baseline_value <= 1


def test_a_corrected_label_counts_once_at_its_first_value(store_engine: Engine) -> None:
    labels = _log(store_engine, 100)
    ev = _evaluator(store_engine)
    store = FeedbackStore(store_engine)
    store.add([{"request_id": k, "label": y} for k, y in labels.items()])
    before = _result(ev, "accuracy")
    # every label "corrected" to its opposite, and outcomes sent twice with new values
    store.add([{"request_id": k, "label": 1 - y, "outcomes": {"revenue": 1.0}}
               for k, y in labels.items()])  # fmt: skip
    store.add([{"request_id": k, "outcomes": {"revenue": 9.0, "clicked": 1}} for k in labels])
    after = _result(ev, "accuracy")
    assert (after.n_candidate, after.n_baseline) == (before.n_candidate, before.n_baseline)
    assert after.estimate == before.estimate  # the judgement is not rewritten
    rev = _result(ev, "outcome:revenue")
    assert rev.n_candidate + rev.n_baseline == 100 and rev.candidate_value == 1.0
    assert _n(ev, "outcome:clicked") == 100  # a new field in a later item still counts
    # the store's own fold (exports, `joined`) keeps the documented last-value-wins view
    by_request = {r.request_id: r for r in joined(store_engine, "m")}
    assert by_request["r0"].label == 1 - labels["r0"]
    assert by_request["r0"].outcomes == {"revenue": 9.0, "clicked": 1.0}


def test_shadow_label_pairs_count_when_the_label_follows_an_outcome(store_engine: Engine) -> None:
    labels = _log(store_engine, 200, shadow=True)
    # (outcomes are judged in canaries only: in a shadow the user saw production's answer)
    ev = _evaluator(store_engine, [Criterion(metric="accuracy", margin=0.05)], mode="shadow")
    store = FeedbackStore(store_engine)
    store.add([{"request_id": k, "outcomes": {"clicked": 1}} for k in labels])
    ev.evaluate()
    store.add([{"request_id": k, "label": y} for k, y in labels.items()])
    acc = _result(ev, "accuracy")
    assert (acc.n_candidate, acc.n_baseline) == (200, 200)
    assert "shadow accuracy" in acc.sentence  # judged on the paired differences
    assert ev.analysis.stats.slices[""].pairs.side("accuracy", "c").n == 200


def _items(labels: dict[str, int], rng: random.Random) -> list[dict[str, Any]]:
    """Per request: a label, a click, a revenue and a correction, in a random order."""
    items = []
    for k, y in labels.items():
        mine = [{"request_id": k, "label": y}, {"request_id": k, "outcomes": {"clicked": y}},
                {"request_id": k, "outcomes": {"revenue": 2.0 + y}}]  # fmt: skip
        rng.shuffle(mine)
        mine.append({"request_id": k, "label": 1 - y, "outcomes": {"revenue": -50.0}})
        items += mine
    rng.shuffle(items)  # requests interleaved; a request's correction still comes last
    order: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        order.setdefault(it["request_id"], []).append(it)
    fixed: list[dict[str, Any]] = []
    for it in items:  # restore each request's own order within the interleaving
        fixed.append(order[it["request_id"]].pop(0))
    return fixed


@pytest.mark.parametrize("seed", [1, 2])
def test_any_order_any_schedule_and_restarts_give_the_first_value_rule(
    store_engine: Engine, seed: int
) -> None:
    """Feedback written before and after its prediction rows, evaluations and restarts at
    random points: the statistics equal the first-value fold of every field, exactly."""
    rng = random.Random(seed)
    n = 160
    labels = {f"r{i}": int(rng.random() < 0.5) for i in range(n)}
    records = [
        PredictionRecord(
            request_id=k, model="m", version="v2" if i % 2 else "v1",
            role="canary" if i % 2 else "stable", ts=1000.0 + i, latency_ms=20.0, status=200,
            prediction=labels[k] if i % 5 else 1 - labels[k], canary_weight_bp=5000,
        )
        for i, k in enumerate(labels)
    ]  # fmt: skip
    items = _items(labels, rng)
    # interleave: prediction rows and feedback items in one random sequence of writes
    # (feedback may precede its prediction row: the gateway logs in batches)
    kinds = ["p"] * len(records) + ["f"] * len(items)
    rng.shuffle(kinds)  # a random merge that keeps the items' own order
    queues = {"p": iter(records), "f": iter(items)}
    writes = [(kind, next(queues[kind])) for kind in kinds]
    ev = _evaluator(store_engine, batch_limit=37)
    for kind, what in writes:
        if kind == "p":
            insert_batch(store_engine, [what])
        else:
            with store_engine.begin() as conn:
                conn.execute(insert(feedback).values(
                    request_id=what["request_id"], ts=2000.0,
                    label=None if "label" not in what else json.dumps(what["label"]),
                    outcomes=json.dumps(what["outcomes"]) if "outcomes" in what else None,
                ))  # fmt: skip
        u = rng.random()
        if u < 0.05:
            ev = Evaluator.from_state(store_engine, json.loads(json.dumps(ev.state_dict())))
        elif u < 0.15:
            ev.evaluate()
    for _ in range(30):  # drain the paged backlog
        ev.evaluate()
    # the reference: every request's first value of each field, from the items' own order
    first: dict[str, dict[str, float]] = {}
    for it in items:
        f = first.setdefault(it["request_id"], {})
        if "label" in it:
            f.setdefault("label", it["label"])
        for name, v in it.get("outcomes", {}).items():
            f.setdefault(name, float(v))
    with store_engine.connect() as conn:
        folded = first_values(conn.execute(feedback.select()).all())
    assert {k: v.label for k, v in folded.items()} == {k: f["label"] for k, f in first.items()}
    stats = ev.analysis.stats.slices[""]
    for arm, parity in (("candidate", 1), ("baseline", 0)):
        mine = [i for i in range(n) if i % 2 == parity]
        cell = stats.arm(arm).pooled
        assert cell("accuracy").n == len(mine)
        right = sum(records[i].prediction == first[f"r{i}"]["label"] for i in mine)
        assert cell("accuracy").total == right
        assert cell("outcome:clicked").n == len(mine)
        assert cell("outcome:clicked").total == sum(first[f"r{i}"]["clicked"] for i in mine)
        assert cell("outcome:revenue").total == sum(first[f"r{i}"]["revenue"] for i in mine)
    assert ev.rows_read == n
