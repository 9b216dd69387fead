"""The sample-ratio guard: is the canary getting the share of requests the route says?

Each evaluation of a canary step reads the requests logged since the last one (by row id,
so the cost does not grow with the log) and feeds them, grouped by the split each was routed
under, to the anytime-valid test of `coalmine.analysis.sequential.srm`. A mismatch is one
sentence for the state machine, which holds the rollout: with a broken sticky key, a
failover or clients pinning versions, the candidate's and production's samples are not
comparable and no verdict on them means anything. The test restarts with each step (and
each resume), so a person who resumes gets a fresh look.
"""

from __future__ import annotations

from dataclasses import dataclass

from coalmine.analysis.sampling import logged_share
from coalmine.analysis.sequential.srm import SampleRatioTest
from coalmine.rollout.machine import Phase
from coalmine.rollout.store import RolloutRecord, RolloutRepository
from coalmine.routing.state import BASIS_POINTS

__all__ = ["SRM_ALPHA", "SplitGuard"]

# A false pause costs a person a look, not a wrong promotion; A/B platforms alarm on sample
# ratio mismatch at p < 0.001 for the same reason.
SRM_ALPHA = 0.001


@dataclass
class _StepTest:
    started_at: float
    test: SampleRatioTest
    after_id: int = 0


class SplitGuard:
    """One sample-ratio test per rollout and step; `check` may block (it reads the store)."""

    def __init__(self, repo: RolloutRepository, *, alpha: float = SRM_ALPHA) -> None:
        self.repo = repo
        self.alpha = alpha
        self._tests: dict[int, _StepTest] = {}

    def forget(self, rollout_id: int) -> None:
        self._tests.pop(rollout_id, None)

    def check(self, record: RolloutRecord) -> str | None:
        """The mismatch, as a sentence, or None (not a canary, too little data, or fine)."""
        s = record.state
        tolerance = s.spec.canary.sample_ratio_tolerance
        if s.phase != Phase.CANARY or tolerance is None:  # None: turned off in the spec
            self.forget(s.id)
            return None
        current = self._tests.get(s.id)
        if current is None or current.started_at != s.step_started_at:
            # the test reads from here on: a subset of the step's requests chosen by time,
            # not by where they went, is as valid and keeps each read O(new rows) however
            # long the log (after a restart, the step's earlier requests are skipped)
            start = self.repo.last_prediction_id(s.model)
            current = _StepTest(s.step_started_at, SampleRatioTest(tolerance), start)
            self._tests[s.id] = current
        current.after_id, groups = self.repo.split_counts(s, s.step_started_at, current.after_id)
        for weight_bp, candidate, others, others_rate in groups:
            if 0 < weight_bp < BASIS_POINTS:  # at 0% or 100% the split says nothing
                # with production's rows sampled, a logged row is the candidate's with its
                # share of LOGGED calls (analysis/sampling.py), not of calls
                share = logged_share(weight_bp / BASIS_POINTS, others_rate)
                current.test.update(candidate, others, share)
        if not current.test.mismatch(self.alpha):
            return None
        summary = current.test.summary()
        return (
            f"sample ratio mismatch: the candidate got {summary.candidate:,} of "
            f"{summary.total:,} requests ({summary.observed_share:.2%}) where the route "
            f"gives it {summary.expected_share:.2%} (e-value {summary.e_value:.3g} ≥ "
            f"{1 / self.alpha:g}); a broken sticky key, a failover or clients pinning a "
            "version make the comparison meaningless"
        )
