"""A Judgement reduced to the Evidence a step decides on (pure).

The controller's reading (`rollout.judge.read_results`, the one `EngineJudge.evaluate`
uses) for a judgement with no rollout record behind it: any FAIL fails; a criterion judged
on no data holds the step whatever its `must` (analysis/nodata.py); a `must: pass`
criterion holds it until PASS; a `must: not_fail` canary criterion holds it until its
confidence sequence rules out a regression larger than the step's floor
(rollout/floor.py). PromQL criteria are not judged here (the request is refused), so the
controller's guard rails have no counterpart. tests/integrations/test_evidence.py pins the
reading with literal judgements.
"""

from __future__ import annotations

from typing import Any

from coalmine.analysis.result import Judgement
from coalmine.rollout.judge import evidence_from, read_results
from coalmine.rollout.machine import Evidence

__all__ = ["evidence_of"]


def evidence_of(
    judgement: Judgement, criteria: list[Any], *, mode: str, floors: dict[str, float],
    samples: int,
) -> Evidence:  # fmt: skip
    """`floors`: criterion name -> the regression the current canary step must rule out."""
    must, failing, unproven, no_data, ruled_out = read_results(judgement, criteria, floors)
    data = judgement.to_dict()
    data.update(mode=mode, rule_out=floors)
    return evidence_from(
        judgement, data, must, failing, unproven, no_data, ruled_out, samples=samples
    )
