"""Production's rows sampled during a canary judge like production's rows in full.

Seeded simulations through the Analysis the controller uses (rows as the engine reads
them: each kept stable row with its sample_weight 1/rate). A 5% canary; stable calls
logged at rate 1 (in full) or 0.1. For each the verdict rates of an as-good candidate
(false FAIL), one exactly at the threshold (false PASS) and a clearly worse one (FAIL
rate), for accuracy (the two-sample score CS) and error rate with max_ratio (the count
e-value). Both errors must stay ≤ α by the upper Clopper–Pearson bound with and without
sampling, and the worse candidate must still FAIL (sampling costs power, not validity).
And the count test fed the sampled rows WITHOUT the share correction fails an as-good
candidate (what this fixes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import stats

from coalmine.analysis import sampling
from coalmine.analysis.analysis import Analysis
from coalmine.analysis.metrics import OVERALL, Obs
from coalmine.analysis.sequential import Verdict

ALPHA = 0.05
SHARE_BP = 500  # 5% canary
RUNS = 100


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    return 1.0 if k == n else float(stats.beta.ppf(level, k + 1, n - k))


def cp_lower(k: int, n: int, level: float = 0.95) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf(1 - level, k, n - k + 1))


@dataclass(frozen=True)
class Case:
    criterion: dict[str, Any]
    base: float  # production's error rate, or accuracy
    cand: float
    looks: int
    per_look: int  # calls per look, both arms


def feed(analysis: Analysis, arm: str, ok: np.ndarray, weight: float, errors: bool) -> None:
    """Rows of one arm at one look, as the engine would (each with its weight).

    The rows that matter to this change go through the Analysis as the engine's do
    (`observe_requests`: error rows, which the count test and the logged rate read); the
    many plain ones are added to the same running moments in bulk, which is what
    `Stats.add_requests`/`add_labels` would do row by row, only ~100× faster.
    """
    cell = analysis.stats.slices[OVERALL].arm(arm)
    if errors:
        bad = int((~ok).sum())
        analysis.observe_requests(arm, [Obs(status=500, step=SHARE_BP, weight=weight)] * bad)
        cell.requests += int(ok.sum())
        cell.cell(SHARE_BP).m("error").add(np.zeros(int(ok.sum())))
        analysis.logged_rate.observe(SHARE_BP, [weight]) if arm == "baseline" and not bad else None
        return
    analysis.observe_requests(arm, [Obs(step=SHARE_BP, weight=weight)])
    cell.requests += len(ok) - 1
    cell.cell(SHARE_BP).m("error").add(np.zeros(len(ok) - 1))
    cell.labelled += len(ok)
    cell.cell(SHARE_BP).m("accuracy").add(ok.astype(np.float64))


def simulate(case: Case, rate: float, seed: int) -> Verdict:
    """One monitored rollout: the first decided verdict, else INCONCLUSIVE at the end."""
    rng = np.random.default_rng(seed)
    analysis = Analysis([case.criterion], mode="canary", alpha=ALPHA, max_slices=0)
    errors = case.criterion["metric"] == "error_rate"
    for look in range(case.looks):
        n_c = rng.binomial(case.per_look, SHARE_BP / 10_000)
        n_b = rng.binomial(case.per_look - n_c, rate)  # the stable calls kept
        # error rate: ok = no error; accuracy: ok = right
        ok_c = rng.random(n_c) >= case.cand if errors else rng.random(n_c) < case.cand
        ok_b = rng.random(n_b) >= case.base if errors else rng.random(n_b) < case.base
        feed(analysis, "baseline", ok_b, 1.0 / rate, errors)
        feed(analysis, "candidate", ok_c, 1.0, errors)
        verdict = analysis.judge(now=float(look)).verdict
        if verdict is not Verdict.INCONCLUSIVE:
            return verdict
    return Verdict.INCONCLUSIVE


def rates(case: Case, rate: float, runs: int = RUNS, seed: int = 0) -> tuple[int, int]:
    """(FAIL, PASS) counts over `runs` seeded rollouts."""
    got = [simulate(case, rate, seed * 100_003 + i) for i in range(runs)]
    return got.count(Verdict.FAIL), got.count(Verdict.PASS)


ERRORS = {"metric": "error_rate", "max_ratio": 1.5}
ACCURACY = {"metric": "accuracy", "margin": 0.02}
CASES = {
    # (criterion, as-good, at the threshold, worse)
    "error_rate": (Case(ERRORS, 0.02, 0.02, 40, 10_000), Case(ERRORS, 0.02, 0.03, 40, 10_000),
                   Case(ERRORS, 0.02, 0.04, 40, 10_000)),
    "accuracy": (Case(ACCURACY, 0.9, 0.9, 40, 10_000), Case(ACCURACY, 0.9, 0.88, 40, 10_000),
                 Case(ACCURACY, 0.9, 0.86, 40, 10_000)),
}  # fmt: skip


@pytest.mark.parametrize("metric", sorted(CASES))
def test_verdict_rates_with_stable_sampled_match_stable_in_full(metric: str) -> None:
    good, boundary, worse = CASES[metric]
    table = {}
    for rate in (1.0, 0.1):
        false_fail, _ = rates(good, rate, seed=1)
        _, false_pass = rates(boundary, rate, seed=2)
        fail, _ = rates(worse, rate, seed=3)
        table[rate] = (false_fail, false_pass, fail)
        assert cp_upper(false_fail, RUNS) <= ALPHA, (metric, rate, table)
        assert cp_upper(false_pass, RUNS) <= ALPHA, (metric, rate, table)
    # the worse candidate is still found: sampling costs power (fewer production rows;
    # at 12 looks instead of 40 the FAIL rate drops 75% -> 49% for the count test and
    # 93% -> 85% for accuracy), never validity
    for rate, (_, _, fail) in table.items():
        assert cp_lower(fail, RUNS) >= 0.9, (metric, rate, table)
    print(f"\n{metric}: rate -> (false FAIL, false PASS, FAIL of worse) of {RUNS}: {table}")


def test_the_count_test_without_the_share_correction_fails_a_good_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before the correction: 10% of production's error events are logged, so the
    candidate's share of logged errors is ~34%, not 5%, and an as-good candidate FAILs."""
    good = CASES["error_rate"][0]
    assert cp_upper(rates(good, 0.1, runs=40, seed=1)[0], 40) < 0.1
    monkeypatch.setattr("coalmine.analysis.analysis.logged_share", lambda share, rate: share)
    false_fail, _ = rates(good, 0.1, runs=40, seed=1)
    assert false_fail >= 36  # ≥ 90%: the uncorrected test is useless under sampling


def test_logged_share_and_rate() -> None:
    assert sampling.logged_share(0.05, 1.0) == 0.05
    assert sampling.logged_share(0.05, 0.1) == pytest.approx(0.05 / (0.05 + 0.095))
    with pytest.raises(ValueError, match="rate"):
        sampling.logged_share(0.05, 0.0)
    r = sampling.LoggedRate()
    assert r.rate(500) == 1.0 and not r.sampled
    r.observe(500, [10.0] * 7 + [10.0] * 3)
    assert r.rate(500) == pytest.approx(0.1) and r.sampled
    assert r.rate(2500) == pytest.approx(0.1)  # a step not seen yet takes the last rate
    assert r.calls() == pytest.approx(100.0)
    again = sampling.LoggedRate.from_dict(r.to_dict())
    assert again.rate(500) == pytest.approx(0.1) and again.calls(500) == pytest.approx(100.0)


def test_the_sample_ratio_test_reads_the_logged_share() -> None:
    """The split guard's test on logged rows: with production logged at 10% a 5% canary
    has ~34% of the rows; judged against 5% that is a 'mismatch' every time, against its
    logged share (what split_guard passes) none, over seeded A/A steps."""
    from coalmine.analysis.sequential.srm import SampleRatioTest

    rng = np.random.default_rng(5)
    flagged = {"logged": 0, "uncorrected": 0}
    for _ in range(50):
        tests = {"logged": SampleRatioTest(), "uncorrected": SampleRatioTest()}
        for _look in range(20):
            c = int(rng.binomial(2000, 0.05))
            others = int(rng.binomial(2000 - c, 0.1))
            tests["logged"].update(c, others, sampling.logged_share(0.05, 0.1))
            tests["uncorrected"].update(c, others, 0.05)
        for k, t in tests.items():
            flagged[k] += t.mismatch(0.001)
    assert flagged == {"logged": 0, "uncorrected": 50}


def test_the_planner_counts_only_the_logged_production_samples() -> None:
    """`coalmine plan --stable-sample-rate`: at a 5% canary with production logged at 10%
    the candidate waits for more samples (production has ~1.9 per candidate sample, not 19),
    the same as a plan at the candidate's logged share; baseline and paired unaffected."""
    from coalmine.analysis.plan import step_can_decide

    kw: dict[str, Any] = {"rps": 100.0, "label_rate": 1.0, "min_effect": 0.02}
    full = step_can_decide(share_percent=5, **kw)
    sampled = step_can_decide(share_percent=5, stable_sample_rate=0.1, **kw)
    assert full.anytime_samples is not None and sampled.anytime_samples is not None
    assert sampled.anytime_samples > 1.2 * full.anytime_samples
    same = step_can_decide(share_percent=100 * sampling.logged_share(0.05, 0.1), **kw)
    assert sampled.anytime_samples == same.anytime_samples
    for extra in ({"like_for_like": True}, {"paired": True}):
        assert (step_can_decide(share_percent=5, stable_sample_rate=0.1, **kw, **extra)
                == step_can_decide(share_percent=5, **kw, **extra))  # fmt: skip
