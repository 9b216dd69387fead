"""Simulations through Analysis (fixed seeds): slices, family-wise error, delayed labels,
business outcomes, critical error classes, the ramp."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from coalmine.analysis import Analysis, Criterion, Verdict
from coalmine.analysis.metrics import Obs

ALPHA = 0.05


def upper_cp(k: int, n: int, level: float = 0.95) -> float:
    """One-sided upper Clopper–Pearson bound of a binomial proportion."""
    return 1.0 if k >= n else float(stats.beta.ppf(level, k + 1, n - k))


Batch = tuple[list[int], list[int], list[dict[str, str]]]


def _arm_batch(rng: np.random.Generator, n: int, acc: np.ndarray | float,
               slice_ids: np.ndarray) -> Batch:  # fmt: skip
    y = rng.integers(0, 2, n)
    correct = rng.random(n) < acc
    pred = np.where(correct, y, 1 - y)
    return pred.tolist(), y.tolist(), [{"segment": f"s{i}"} for i in slice_ids]


@pytest.mark.slow
def test_twenty_slices_of_aa_data_keep_the_familywise_false_fail_rate_below_alpha() -> None:
    rng = np.random.default_rng(2024)
    runs, looks, per_look = 60, 6, 400  # per arm per look, spread over 20 slices
    corrected_fails = 0

    for _ in range(runs):
        crit = Criterion(
            metric="accuracy", margin=0.0
        )  # the harshest A/A: FAIL = any sign of worse
        a = Analysis([crit], max_slices=20)
        failed = False
        for _look in range(looks):
            for arm in ("candidate", "baseline"):
                seg = rng.integers(0, 20, per_look)
                p, y, sl = _arm_batch(rng, per_look, 0.9, seg)
                a.add_batch(arm, predictions=p, labels=y, slices=sl)
            j = a.judge()
            if _look >= 2:  # a slice value is judged from 50 rows on (slices.MIN_ROWS)
                assert len(j.results) == 21  # all traffic + 20 slices
            failed |= j.verdict is Verdict.FAIL
        corrected_fails += failed
    print(f"family-wise false FAIL over 20 slices: {corrected_fails}/{runs}")
    assert upper_cp(corrected_fails, runs) <= ALPHA


def test_a_regression_confined_to_one_of_five_slices_fails_and_names_it() -> None:
    rng = np.random.default_rng(5)
    a = Analysis([Criterion(metric="accuracy", margin=0.01)], max_slices=5)
    n = 15_000
    for arm in ("candidate", "baseline"):
        seg = rng.integers(0, 5, n)
        acc = np.where(seg == 2, 0.80, 0.90) if arm == "candidate" else 0.90
        p, y, sl = _arm_batch(rng, n, acc, seg)
        a.add_batch(arm, predictions=p, labels=y, slices=sl)
    j = a.judge()
    overall = j.overall()[0]
    assert -0.03 < overall.estimate < -0.01  # about −2 points overall
    assert j.verdict is Verdict.FAIL
    failing_slices = [r.slice for r in j.failing() if r.slice is not None]
    assert failing_slices == ["segment=s2"]
    s2 = next(r for r in j.failing() if r.slice == "segment=s2")
    assert s2.sentence.startswith("in slice segment=s2, canary accuracy")
    assert "segment=s2" in j.summary()


def test_delayed_labels_keep_validity_and_say_inconclusive_not_pass_when_few() -> None:
    rng = np.random.default_rng(99)
    runs, looks, per_look = 80, 12, 300
    false_fails, early_pass = 0, 0
    for _ in range(runs):
        a = Analysis([Criterion(metric="accuracy", margin=0.01)], max_slices=0)
        waiting: list[tuple[int, str, Obs]] = []  # (due look, arm, obs)
        for look in range(looks):
            for arm in ("candidate", "baseline"):
                n = per_look // 5 if arm == "candidate" else per_look  # 1 : 5 split
                y = rng.integers(0, 2, n)
                pred = np.where(rng.random(n) < 0.9, y, 1 - y)
                rows = [
                    Obs(prediction=int(p), label=int(t), has_label=True)
                    for p, t in zip(pred, y, strict=True)
                ]
                a.observe_requests(arm, rows)
                # the delay (in looks) does not depend on the version
                due = look + rng.geometric(0.3, n)
                waiting += [(int(d), arm, o) for d, o in zip(due, rows, strict=True)]
            ready = [w for w in waiting if w[0] <= look]
            waiting = [w for w in waiting if w[0] > look]
            for arm in ("candidate", "baseline"):
                a.observe_labels(arm, [o for _, r, o in ready if r == arm])
            v = a.judge().overall()[0]
            if look == 0:
                assert v.n_candidate < 60
                early_pass += v.verdict is Verdict.PASS
            if v.verdict is Verdict.FAIL:
                false_fails += 1
                break
    assert early_pass == 0  # few labels: INCONCLUSIVE, never PASS
    assert false_fails / runs <= ALPHA
    assert upper_cp(false_fails, runs) <= 2 * ALPHA


def test_business_outcome_compared_in_a_canary() -> None:
    rng = np.random.default_rng(1)
    crit = Criterion(metric="outcome:purchase", margin=0.01)
    worse = Analysis([crit], max_slices=0)
    better = Analysis([crit], max_slices=0)
    n = 20_000
    for a, rate_c in ((worse, 0.07), (better, 0.105)):
        for arm, rate in (("candidate", rate_c), ("baseline", 0.10)):
            bought = (rng.random(n) < rate).astype(float)
            a.add_batch(arm, latency_ms=[10.0] * n, outcomes=[{"purchase": b} for b in bought])
    rw, rb = worse.judge().overall()[0], better.judge().overall()[0]
    assert rw.verdict is Verdict.FAIL and "outcome:purchase" in rw.sentence
    assert rb.verdict is Verdict.PASS
    assert rw.n_candidate == n


def test_outcome_criteria_are_rejected_in_shadow_mode() -> None:
    with pytest.raises(ValueError, match=r"criteria\[0\] \(outcome:ctr\).*canary only"):
        Analysis([Criterion(metric="outcome:ctr", margin=0.01)], mode="shadow")


def test_a_critical_error_class_fails_at_once() -> None:
    a = Analysis(
        [Criterion(metric="accuracy", margin=0.01),
         Criterion(metric="error_rate", name="no-oom", critical=True,
                   error_classes=["http_507", "timeout"])],
        max_slices=0,
    )  # fmt: skip
    a.add_batch("baseline", predictions=[1] * 100, latency_ms=[5.0] * 100)
    a.add_batch("candidate", predictions=[1] * 10, latency_ms=[5.0] * 10)
    j = a.judge()
    assert next(r for r in j.results if r.name == "no-oom").verdict is Verdict.PASS
    a.add_batch("candidate", predictions=[1, None], latency_ms=[5.0, 5.0], errors=[None, "timeout"])
    j = a.judge()
    assert j.verdict is Verdict.FAIL
    first = j.failing()[0]
    assert first.name == "no-oom" and first.critical
    assert "1 × timeout" in first.sentence


@pytest.mark.slow
def test_the_ramp_is_stratified_by_step_while_pooling_breaks() -> None:
    rng = np.random.default_rng(8)
    crit = Criterion(metric="accuracy", margin=0.0)
    runs = 12
    stratified_fails = pooled_fails = 0
    plan = [(100, 0.90), (500, 0.88), (2500, 0.865), (5000, 0.85)]  # (share bp, base accuracy)
    for _ in range(runs):
        strat, pooled = Analysis([crit], max_slices=0), Analysis([crit], max_slices=0)
        for share, acc in plan:
            total = 6000
            n_c = rng.binomial(total, share / 10_000)
            for arm, n in (("candidate", n_c), ("baseline", total - n_c)):
                y = rng.integers(0, 2, n)
                p = np.where(rng.random(n) < acc, y, 1 - y).tolist()
                strat.add_batch(arm, predictions=p, labels=y.tolist(), steps=[share] * n)
                pooled.add_batch(arm, predictions=p, labels=y.tolist())
        stratified_fails += strat.judge().verdict is Verdict.FAIL
        pooled_fails += pooled.judge().verdict is Verdict.FAIL
    print(f"ramp A/A: stratified FAIL {stratified_fails}/{runs}, pooled FAIL {pooled_fails}/{runs}")
    assert stratified_fails == 0
    assert pooled_fails >= runs // 2


def test_error_counts_under_an_unbalanced_split_use_the_count_e_value() -> None:
    rng = np.random.default_rng(12)
    crit = Criterion(metric="error_rate", max_ratio=1.0)
    bad, same = Analysis([crit], max_slices=0), Analysis([crit], max_slices=0)
    for a, rate_c in ((bad, 0.015), (same, 0.005)):
        for share in (100, 500, 2000):  # the canary ramps 1% → 5% → 20%
            total = 40_000
            n_c = int(total * share / 10_000)
            for arm, n, rate in (("candidate", n_c, rate_c), ("baseline", total - n_c, 0.005)):
                errs = np.where(rng.random(n) < rate, "http_5xx", None).tolist()
                a.add_batch(arm, errors=errs, latency_ms=[5.0] * n, steps=[share] * n)
    rb, rs = bad.judge().results[0], same.judge().results[0]
    assert rb.verdict is Verdict.FAIL and rb.estimate > 1.5  # rate ratio, about 3
    assert "ratio" in rb.sentence and rb.threshold == 1.0
    assert rs.verdict is not Verdict.FAIL
