"""A Judgement reduced to the Evidence a step decides on (pure).

The same reading as the controller's `EngineJudge.evaluate` (rollout/judge.py), for a
judgement with no rollout record behind it: any FAIL fails; a criterion judged on no data
holds the step whatever its `must` (analysis/nodata.py); a `must: pass` criterion holds it
until PASS; a `must: not_fail` canary criterion holds it until its confidence sequence
rules out a regression larger than the step's floor (rollout/floor.py). Kept beside the
controller's rather than shared while that function is being extended (PromQL guard
rails); tests/integrations/test_evidence.py pins the reading with literal judgements.
"""

from __future__ import annotations

from typing import Any

from coalmine.analysis.nodata import lacks_data
from coalmine.analysis.result import Judgement
from coalmine.rollout.floor import floor_check
from coalmine.rollout.machine import Evidence

__all__ = ["evidence_of"]


def evidence_of(
    judgement: Judgement, criteria: list[Any], *, mode: str, floors: dict[str, float],
    samples: int,
) -> Evidence:  # fmt: skip
    """`floors`: criterion name -> the regression the current canary step must rule out."""
    must = {c.name: c.must for c in criteria}
    by_name = {c.name: c for c in criteria}
    failing: list[str] = []
    unproven: list[str] = []
    no_data: list[str] = []
    ruled_out: list[str] = []
    held = set(judgement.held)
    for r in judgement.results:
        verdict = r.verdict.value.lower()
        where = f" [slice {r.slice}]" if r.slice else ""
        if verdict == "fail":
            failing.append(f"{r.sentence}{where}")
            continue
        if r.slice:
            if (r.name, r.slice) in held and must.get(r.name) == "pass":
                unproven.append(f"{r.name}{where}: {r.sentence}")
            continue
        missing = lacks_data(r, by_name.get(r.name))
        if missing is not None:
            no_data.append(f"{r.name}: {missing}")
        elif must.get(r.name) == "pass" and verdict != "pass":
            unproven.append(f"{r.name}: {r.sentence}")
        elif r.name in floors:
            ok, sentence = floor_check(r, by_name[r.name], floors[r.name])
            (ruled_out if ok else unproven).append(sentence)
    data = judgement.to_dict()
    data.update(mode=mode, must=must, rule_out=floors, no_data=list(no_data),
                undecided=list(unproven))  # fmt: skip
    return Evidence(
        failing=tuple(failing),
        unproven=tuple(unproven),
        no_data=tuple(no_data),
        ruled_out=tuple(ruled_out),
        samples=samples,
        must_pass=sum(1 for m in must.values() if m == "pass"),
        must_not_fail=sum(1 for m in must.values() if m == "not_fail"),
        summary=judgement.summary(),
        judgement=data,
    )
