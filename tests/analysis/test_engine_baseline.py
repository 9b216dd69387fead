"""Evaluator with a baseline (a fresh instance of the stable version, role "baseline"), on a
real store (SQLite file and PostgreSQL): the canary judged against the baseline's rows, and
the shadow's noise floor from production/shadow/baseline triples read once each."""

from __future__ import annotations

import json
import random
from itertools import permutations
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, insert

from coalmine.analysis import Analysis, Criterion, Verdict, default_criteria
from coalmine.analysis.engine import Evaluator
from coalmine.log.record import PredictionRecord
from coalmine.store.predictions import insert_batch
from coalmine.store.schema import feedback

ACCURACY = [Criterion(metric="accuracy", margin=0.01)]
FLOOR = [Criterion(metric="agreement", margin=0.01)]


def _rec(rid: str, model: str, version: str, role: str, pred: Any, i: int,
         bp: int = 0) -> PredictionRecord:  # fmt: skip
    return PredictionRecord(
        request_id=rid, model=model, version=version, role=role, ts=1000.0 + i,
        latency_ms=20.0, status=200, prediction=pred,
        slices={"region": "eu" if i % 2 else "us"}, canary_weight_bp=bp,
    )  # fmt: skip


def _canary_log(engine: Engine, model: str, acc: dict[str, float], n: int, seed: int) -> int:
    """25% canary, 25% baseline (the same share, same canary_weight_bp), 50% stable;
    labelled. Returns the number of baseline rows."""
    rng = np.random.default_rng(seed)
    records, labels = [], []
    for i in range(n):
        rid = f"{model}-{i}"
        y = int(rng.integers(0, 2))
        u = rng.random()
        version, role = ("v2", "canary") if u < 0.25 else (("v1", "baseline") if u < 0.5
                                                           else ("v1", "stable"))  # fmt: skip
        pred = y if rng.random() < acc[role] else 1 - y
        records.append(_rec(rid, model, version, role, pred, i, bp=2500))
        labels.append({"request_id": rid, "label": json.dumps(y), "outcomes": None, "ts": 2e3})
    insert_batch(engine, records)
    with engine.begin() as conn:
        conn.execute(insert(feedback), labels)
    return sum(r.role == "baseline" for r in records)


def _accuracy(ev: Evaluator) -> Any:
    return next(r for r in ev.evaluate().results if r.name == "accuracy" and r.slice is None)


def test_canary_is_judged_against_the_baseline_rows_not_production(
    store_engine: Engine,
) -> None:
    # model "a": production looks much better than the canary, the baseline like it;
    # model "b": the reverse (the fresh baseline is much better than the canary)
    n_base = {
        "a": _canary_log(store_engine, "a", {"canary": 0.8, "baseline": 0.8, "stable": 0.95},
                         6000, 1),
        "b": _canary_log(store_engine, "b", {"canary": 0.8, "baseline": 0.95, "stable": 0.8},
                         6000, 2),
    }  # fmt: skip
    for model, with_baseline, against_stable in (
        ("a", {Verdict.PASS, Verdict.INCONCLUSIVE}, {Verdict.FAIL}),
        ("b", {Verdict.FAIL}, {Verdict.PASS, Verdict.INCONCLUSIVE}),
    ):
        common: dict[str, Any] = dict(model=model, candidate="v2", baseline="v1",
                                      criteria=ACCURACY, mode="canary", max_slices=2)  # fmt: skip
        ev = Evaluator(store_engine, baseline_role="baseline", **common)
        assert ev.analysis.like_for_like and not ev.analysis.noise_floor
        acc = _accuracy(ev)
        assert acc.verdict in with_baseline, acc.sentence
        assert acc.n_baseline == n_base[model]  # only the baseline's rows, every one
        assert _accuracy(Evaluator(store_engine, **common)).verdict in against_stable
        # a restart keeps judging against the baseline (and old states load as "stable")
        state = json.loads(json.dumps(ev.state_dict()))
        assert Evaluator.from_state(store_engine, state).baseline_role == "baseline"
        del state["baseline_role"]
        assert Evaluator.from_state(store_engine, state).baseline_role == "stable"


ROLES = (("v1", "stable"), ("v2", "shadow"), ("v1", "baseline"))


def test_noise_floor_triples_counted_once_in_every_arrival_order(store_engine: Engine) -> None:
    """Each request's three rows arrive in one of the 6 orders, spread over 6 insert batches
    (an evaluation after each, paging through small batches, a restart from state midway);
    some requests lack the baseline or the shadow row. Every complete triple is counted
    exactly once, with the right agreement values, and a fresh full read agrees."""
    rnd = random.Random(5)
    n_req, n_batches = 600, 5
    # + a last batch of baseline rows only: they complete triples with no main-arm row new
    batches: list[list[tuple[float, int, PredictionRecord]]] = [[] for _ in range(n_batches + 1)]
    expected = {"n": 0, "c": 0.0, "b": 0.0, "cb": 0.0, "eu": 0}
    pairs = 0
    orders = list(permutations(range(3)))
    for i in range(n_req):
        rid = f"r{i}"
        preds = [rnd.randrange(3) for _ in range(3)]  # stable, shadow, baseline
        present = [True, i % 20 != 7, i % 10 != 3]  # some shadow / baseline rows missing
        when = sorted(rnd.randrange(n_batches) for _ in range(3))
        key = rnd.random()
        for pos, role_index in enumerate(orders[i % 6]):
            if present[role_index]:
                version, role = ROLES[role_index]
                rec = _rec(rid, "m", version, role, preds[role_index], i)
                late = role == "baseline" and i % 10 == 5
                batches[n_batches if late else when[pos]].append((key, pos, rec))
        if present[1]:
            pairs += 1
        if all(present):
            a_c, a_b = float(preds[1] == preds[0]), float(preds[2] == preds[0])
            expected["n"] += 1
            expected["c"] += a_c
            expected["b"] += a_b
            expected["cb"] += a_c * a_b
            expected["eu"] += i % 2
    kwargs: dict[str, Any] = dict(model="m", candidate="v2", baseline="v1", criteria=FLOOR,
                                  mode="shadow", max_slices=2,
                                  baseline_role="baseline")  # fmt: skip
    ev = Evaluator(store_engine, batch_limit=150, **kwargs)
    for k, batch in enumerate(batches):
        batch.sort(key=lambda t: (t[0], t[1]))  # requests interleaved, each in its order
        insert_batch(store_engine, [rec for _, _, rec in batch])
        while True:  # page through the backlog in batches of 150 main-arm rows
            cursor = ev.last_prediction_id
            ev.evaluate()
            if ev.last_prediction_id == cursor:
                break
        if k == 2:
            ev = Evaluator.from_state(store_engine, json.loads(json.dumps(ev.state_dict())))
    assert ev.triples_read == expected["n"]
    cross = ev.analysis.stats.slices[""].pairs.cross["agree_floor"]
    assert cross[:3] == [expected["n"], expected["c"], expected["b"]]
    assert cross[5] == expected["cb"]
    assert ev.analysis.stats.slices["region=eu"].pairs.cross["agree_floor"][0] == expected["eu"]
    assert ev.analysis.stats.slices[""].pairs.pairs == pairs  # the main pairs are unchanged
    assert ev.rows_read == n_req + pairs  # baseline rows are not a main arm's rows
    j = ev.evaluate()
    floor = next(r for r in j.results if r.name == "agreement" and r.slice is None)
    assert floor.n_candidate == floor.n_baseline == expected["n"]
    assert "(noise floor)" in floor.sentence
    assert np.isclose(floor.baseline_value, expected["b"] / expected["n"])
    fresh = Evaluator(store_engine, **kwargs)
    fresh.evaluate()
    assert fresh.analysis.stats.to_dict() == ev.analysis.stats.to_dict()


def test_margin_without_a_baseline_is_refused_naming_the_criterion(tmp_path: Any) -> None:
    from coalmine.store.engine import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    common: dict[str, Any] = dict(model="m", candidate="v2", baseline="v1", mode="shadow")
    for role in ("stable", None):
        extra = {"baseline_role": role} if role else {}
        with pytest.raises(ValueError, match=r"agreement margin needs a baseline \(noise floor\)"):
            Evaluator(engine, criteria=FLOOR, **common, **extra)
    with pytest.raises(ValueError, match=r"criteria\[0\] \(diff\): mean_abs_diff margin needs"):
        Analysis([Criterion(metric="mean_abs_diff", name="diff", margin=0.1)], mode="shadow",
                 task="regression")  # fmt: skip
    with pytest.raises(ValueError, match="baseline_role"):
        Evaluator(engine, criteria=FLOOR, baseline_role="fresh", **common)  # type: ignore[arg-type]
    # with a baseline it is accepted; the default criteria then use the noise floor
    ev = Evaluator(engine, criteria=None, baseline_role="baseline", **common)
    agreement = next(c for c in ev.criteria if c.metric == "agreement")
    assert (agreement.margin, agreement.min) == (0.05, None)
    assert next(c for c in default_criteria("classification", "shadow") if
                c.metric == "agreement").min == 0.95  # fmt: skip
    # a canary with a baseline has no noise floor (different requests)
    with pytest.raises(ValueError, match="shadow"):
        Analysis(FLOOR, mode="canary", noise_floor=True)
    engine.dispose()


def test_noise_floor_without_triples_yet_is_inconclusive_and_says_it_needs_a_baseline() -> None:
    a = Analysis(FLOOR, mode="shadow", noise_floor=True, max_slices=0)
    a.add_pairs(candidate=[1, 0, 1], baseline=[1, 0, 0])  # no baseline answers yet
    r = a.judge().results[0]
    assert r.verdict is Verdict.INCONCLUSIVE and r.n_candidate == 0
    assert "needs a baseline (noise floor)" in r.sentence
    assert a.judge().notes == [
        "noise floor: no request answered by production, shadow and baseline yet"
    ]


def test_regression_mean_abs_diff_margin_against_the_noise_floor() -> None:
    rng = np.random.default_rng(8)
    crit = [Criterion(metric="mean_abs_diff", margin=0.05)]
    for shift, verdict in ((0.0, Verdict.PASS), (0.3, Verdict.FAIL)):
        a = Analysis(crit, task="regression", mode="shadow", noise_floor=True, max_slices=0)
        x = rng.normal(size=5000)
        noisy = lambda s=0.0, x=x: (x + s + rng.normal(0, 0.2, x.size)).tolist()  # noqa: E731
        a.add_pairs(candidate=noisy(shift), baseline=noisy(), noise_baseline=noisy())
        r = a.judge().results[0]
        assert r.verdict is verdict, r.sentence
        assert r.n_candidate == 5000
        assert "vs the baseline's" in r.sentence and "(noise floor)" in r.sentence
    # margin and an absolute max together: both tests, each at α/2; the state round-trips
    both = Analysis([Criterion(metric="mean_abs_diff", margin=0.05, max=0.1)],
                    task="regression", mode="shadow", noise_floor=True, max_slices=0)  # fmt: skip
    x = rng.normal(size=2000)
    both.add_pairs(candidate=(x + 0.2).tolist(), baseline=x.tolist(), noise_baseline=x.tolist())
    assert both.judge().results[0].verdict is Verdict.FAIL
    again = Analysis.from_state(json.loads(json.dumps(both.state_dict())))
    assert again.noise_floor and again.judge().results[0].verdict is Verdict.FAIL


def test_floor_sentence_names_both_agreements_and_the_allowance() -> None:
    a = Analysis(FLOOR, mode="shadow", noise_floor=True, max_slices=0)
    prod = [i % 2 for i in range(1000)]
    cand = [1 - p if i % 100 < 9 else p for i, p in enumerate(prod)]  # 91.0% agreement
    base = [1 - p if i % 100 >= 92 else p for i, p in enumerate(prod)]  # 92.0%
    a.add_pairs(candidate=cand, baseline=prod, noise_baseline=base)
    j = a.judge()
    s = j.results[0].sentence
    assert j.notes == [
        "noise floor: a fresh baseline of production's version agrees with production on "
        "92.0% (95% CS 88.7% to 94.4%) of 1,000 requests"
    ]
    assert s.startswith(
        "shadow agreement with production 91.0% vs the baseline's 92.0% (noise floor), "
        "\u22121.0 pts (95% CS \u2212"
    ), s
    assert s.endswith("allowed \u22121.0 pts: INCONCLUSIVE (1,000 requests with a baseline so far)")


def test_error_count_evalue_uses_the_equal_split_of_a_like_for_like_canary() -> None:
    """At a 5% canary with a fresh baseline at 5% too, an error is the candidate's with
    probability ½ under H0, not 5%: conditioning on the weight would FAIL an equal
    candidate at once (the e-value sees 10× 'too many' candidate errors)."""
    rng = np.random.default_rng(9)
    crit = [Criterion(metric="error_rate", max_ratio=1.5)]
    verdicts = {}
    for like in (True, False):
        a = Analysis(crit, mode="canary", max_slices=0, like_for_like=like)
        for _ in range(20):  # equal arms, equal 2% error rates
            for arm in ("candidate", "baseline"):
                errors = (rng.random(1000) < 0.02).tolist()
                a.add_batch(arm, errors=errors, steps=[500] * 1000)
        verdicts[like] = a.judge().results[0].verdict
        assert Analysis.from_state(json.loads(json.dumps(a.state_dict()))).like_for_like is like
    assert verdicts[True] is not Verdict.FAIL
    assert verdicts[False] is Verdict.FAIL  # what a canary against production's rest would do


def test_planning_a_like_for_like_step_counts_the_baseline_arm_as_small() -> None:
    from coalmine.analysis.plan import step_can_decide

    plain = step_can_decide(share_percent=5, rps=100, label_rate=1, min_effect=0.02)
    like = step_can_decide(share_percent=5, rps=100, label_rate=1, min_effect=0.02,
                           like_for_like=True)  # fmt: skip
    assert like.samples_per_second == plain.samples_per_second
    assert like.anytime_samples is not None and plain.anytime_samples is not None
    assert 1.5 * plain.anytime_samples < like.anytime_samples < 2.5 * plain.anytime_samples


def _export_csv(path: Any, rows: list[tuple[str, str, str, int]]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request_id", "model", "version", "role", "ts", "latency_ms", "status",
                    "prediction", "canary_weight_bp", "label"])  # fmt: skip
        for rid, version, role, pred in rows:
            w.writerow([rid, "m", version, role, 1000, 20.0, 200, pred, 2500, 1])


def test_exported_logs_follow_the_same_baseline_rule(tmp_path: Any) -> None:
    from coalmine.analysis.sources.export import analyze_export

    # shadow: production always 1, the baseline 1 on 92%, the shadow 1 on 91% of requests
    shadow = tmp_path / "shadow.csv"
    rows = []
    for i in range(1000):
        rows += [(f"r{i}", "v1", "stable", 1), (f"r{i}", "v2", "shadow", int(i % 100 >= 9))]
        if i < 900:
            rows.append((f"r{i}", "v1", "baseline", int(i % 100 < 92)))
    _export_csv(shadow, rows)
    a = analyze_export(shadow, model="m", candidate="v2", baseline="v1", criteria=None,
                       max_slices=0)  # fmt: skip
    assert a.mode == "shadow" and a.noise_floor
    floor = next(r for r in a.judge().results if r.metric == "agreement")
    assert floor.n_candidate == 900 and "(noise floor)" in floor.sentence
    assert a.stats.slices[""].pairs.pairs == 1000  # shadow vs production only
    # canary: judged against the baseline's rows (all right) instead of production's (wrong)
    canary = tmp_path / "canary.csv"
    _export_csv(canary, [(f"r{i}", *[("v2", "canary"), ("v1", "baseline"), ("v1", "stable")][i % 3],
                          int(i % 3 != 2)) for i in range(6000)])  # fmt: skip
    a = analyze_export(canary, model="m", candidate="v2", baseline="v1",
                       criteria=ACCURACY, max_slices=0)  # fmt: skip
    assert a.mode == "canary" and a.like_for_like
    acc = a.judge().results[0]
    # 2,000 perfect answers an arm: enough for the score CS to rule out a 1-point drop
    assert acc.baseline_value == 1.0 and acc.n_baseline == 2000 and acc.verdict is Verdict.PASS
