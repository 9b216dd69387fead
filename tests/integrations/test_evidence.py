"""The judge-only reading of a judgement (evidence.py, decision.py) with literal inputs."""

from __future__ import annotations

import math

from coalmine.analysis.criteria import Criterion
from coalmine.analysis.result import CriterionResult, Judgement, Verdict
from coalmine.integrations.decision import answer, decide
from coalmine.integrations.evidence import evidence_of

ACC = Criterion(metric="accuracy", margin=0.01, must="not_fail")
ERR = Criterion(metric="error_rate", margin=0.005, must="pass")


def _result(c: Criterion, verdict: Verdict, lower: float, upper: float, n: int = 500,
            slice_: str | None = None) -> CriterionResult:  # fmt: skip
    return CriterionResult(
        name=c.name, metric=c.metric, slice=slice_, verdict=verdict, estimate=(lower + upper) / 2,
        lower=lower, upper=upper, threshold=-(c.margin or 0), n_candidate=n, n_baseline=n,
        sentence=f"{c.name} {verdict.value}", must=c.must,
    )  # fmt: skip


def _judge(*results: CriterionResult) -> Judgement:
    return Judgement(Verdict.INCONCLUSIVE, list(results), 500, 500, evaluated_at=1.0)


def test_a_fail_anywhere_fails_the_step_even_in_a_slice() -> None:
    j = _judge(
        _result(ACC, Verdict.INCONCLUSIVE, -0.02, 0.02),
        _result(ACC, Verdict.FAIL, -0.3, -0.1, slice_="region=eu"),
        _result(ERR, Verdict.PASS, -0.01, 0.001),
    )
    ev = evidence_of(j, [ACC, ERR], mode="canary", floors={"accuracy": 0.05}, samples=500)
    verdict, reason = decide(ev, elapsed=60, min_duration=30, min_samples=100)
    assert verdict == "FAIL" and reason == "accuracy FAIL [slice region=eu]"


def test_pass_needs_the_floor_ruled_out_and_every_must_pass_passed() -> None:
    ok_acc = _result(ACC, Verdict.INCONCLUSIVE, -0.03, 0.02)  # floor 0.05: ruled out
    ev = evidence_of(
        _judge(ok_acc, _result(ERR, Verdict.PASS, -0.01, 0.001)), [ACC, ERR], mode="canary",
        floors={"accuracy": 0.05}, samples=500,
    )  # fmt: skip
    verdict, reason = decide(ev, elapsed=60, min_duration=30, min_samples=100)
    assert verdict == "PASS"
    assert reason == (
        "after 60s and 500 samples: 1 must-pass PASS; accuracy: no regression larger than 5 points"
    )
    wide = _result(ACC, Verdict.INCONCLUSIVE, -0.08, 0.02)  # cannot rule out 5 points yet
    ev = evidence_of(
        _judge(wide, _result(ERR, Verdict.INCONCLUSIVE, -0.01, 0.01)), [ACC, ERR],
        mode="canary", floors={"accuracy": 0.05}, samples=500,
    )  # fmt: skip
    verdict, reason = decide(ev, elapsed=60, min_duration=30, min_samples=100)
    assert verdict == "INCONCLUSIVE"
    assert "2 criteria undecided" in reason and "error_rate: error_rate INCONCLUSIVE" in reason


def test_no_data_and_the_step_minimums_hold_the_step() -> None:
    empty = _result(ACC, Verdict.INCONCLUSIVE, -math.inf, math.inf, n=0)
    ev = evidence_of(_judge(empty), [ACC], mode="canary", floors={}, samples=0)
    verdict, reason = decide(ev, elapsed=10, min_duration=30, min_samples=100)
    assert verdict == "INCONCLUSIVE"
    assert reason == (
        "waiting (10/30s, 0/100 samples, accuracy: no candidate data yet (from feedback labels))"
    )


def test_the_answer_is_flat_where_tools_read_it() -> None:
    ok_acc = _result(ACC, Verdict.INCONCLUSIVE, -0.03, 0.02)
    ev = evidence_of(_judge(ok_acc), [ACC], mode="canary", floors={"accuracy": 0.05}, samples=7)
    out = answer(head={"model": "m", "candidate": "c", "baseline": "b", "mode": "canary"},
                 step={"weight": 5.0}, verdict="PASS", reason="r", ev=ev)  # fmt: skip
    assert out["verdict"] == "PASS" and out["step"] == {"weight": 5.0, "samples": 7}
    acc = out["criteria"]["accuracy"]
    assert acc["verdict"] == "INCONCLUSIVE" and acc["rule_out"] == 0.05
    assert (acc["lower"], acc["upper"], acc["n_candidate"]) == (-0.03, 0.02, 500)
    assert out["n_candidate"] == 500 and out["analysis_verdict"] == "INCONCLUSIVE"
