"""Planning the wait: how long each canary step needs to decide (pure).

At a canary share π with R requests/s of which a fraction L get a label, the candidate
collects R·π·L labelled samples per second. A step decides a regression of `min_effect`
(e.g. 2 accuracy points) once the candidate has the samples the test needs:

- anytime-valid (what Coalmine runs, looked at continuously): the normal-mixture CS, from
  `sequential.anytime_sample_size`, with 90% power by default;
- fixed horizon (a z-test looked at once, at its planned sample size and never before):
  `sequential.fixed_horizon_sample_size`. Cheaper — about half — but only if nobody peeks.

The distance that matters is `min_effect − margin` (a drop of 2 points against an allowed
1 point is 1 point from the FAIL boundary). The engine splits α over criteria and slices
(Bonferroni), so pass `tests=K` to plan at the per-test level it will really use.
A step at 100% has no production traffic left to compare with: nothing to plan.

Paired canary (`paired=True`): the stable version also answers each canary request, so each
labelled candidate sample is a pair and the test is on d_i = correct_c(i) − correct_b(i),
whose variance is D − Δ² for a share D of requests on which exactly one version is right
(`disagreement`). That does not depend on the share. Unpaired, a candidate sample costs
p_c(1 − p_c) + p_b(1 − p_b)·π/(1 − π): at 5% about 0.11 for accuracy 0.90, so pairing pays
when the versions' errors mostly coincide (D below ~0.11 there) and more at larger shares.
Not knowing D, the plan takes the worst case, errors that never coincide
(D = (1 − p_c) + (1 − p_b)), which is dearer than unpaired at small shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coalmine.analysis.sampling import logged_share
from coalmine.analysis.sequential import anytime_sample_size, fixed_horizon_sample_size
from coalmine.routing.split import candidate_fraction

__all__ = [
    "FLOOR_AT_ONE_PERCENT", "StepPlan", "default_rule_out", "paired_variance", "plan_steps",
    "step_can_decide",
]  # fmt: skip

# The power floor of a `must: not_fail` canary criterion: the step advances only once the
# confidence sequence rules out a regression larger than margin + FLOOR_AT_ONE_PERCENT /
# √(share in %) — 20 points (or a ratio 0.2 above max_ratio) at 1%, 2.8 at 50%. Why 1/√share:
# at a steady request rate the candidate's samples grow with its share, and the sequence's
# width shrinks as 1/√n (`anytime_sample_size` needs n ∝ 1/gap²), so every step needs about
# the same time to rule out its own floor, while the regression a user may be exposed to
# shrinks as more of them are. Only scales known in advance get a default: proportions in
# points (accuracy, error_rate) with a margin, and means judged by max_ratio (latency_mean,
# mae, rmse, log_loss, cpu, memory). A spec sets `rule_out` per criterion for the others.
FLOOR_AT_ONE_PERCENT = 0.20
_RATIO_FAMILIES = frozenset({"latency_mean", "quality", "resource"})


@dataclass(frozen=True)
class StepPlan:
    share_percent: float
    samples_per_second: float  # labelled candidate samples per second
    anytime_samples: int | None  # None: no comparison possible at this step
    fixed_samples: int | None
    anytime_seconds: float
    fixed_seconds: float
    max_duration_s: float | None = None

    @property
    def can_decide(self) -> bool:
        """True when the step's max duration (if any) covers the anytime-valid wait."""
        if self.anytime_samples is None:
            return True
        if self.max_duration_s is None:
            return math.isfinite(self.anytime_seconds)
        return self.anytime_seconds <= self.max_duration_s

    def warning(self) -> str | None:
        if self.can_decide:
            return None
        return (
            f"step {self.share_percent:g}%: deciding needs ~{self.anytime_samples:,} labelled "
            f"candidate samples ≈ {format_duration(self.anytime_seconds)} at "
            f"{self.samples_per_second:.3g}/s, more than its max duration "
            f"{format_duration(self.max_duration_s or 0)}: it will end INCONCLUSIVE"
        )


def default_rule_out(
    *,
    unit: str,
    family: str,
    margin: float | None,
    max_ratio: float | None,
    share_percent: float,
) -> float | None:
    """The regression a not_fail criterion must rule out at a step, on its threshold's scale.

    A difference (margin criteria: the CS must exclude a drop larger than it) or a ratio
    (max_ratio criteria: the CS of candidate/production must stay below it). None: no
    default for this kind of criterion, or a step at 100% (nothing to compare with).
    """
    if not 0 < share_percent < 100:
        return None
    gap = FLOOR_AT_ONE_PERCENT / math.sqrt(share_percent)
    if margin is not None and unit == "pts":
        return margin + gap
    if max_ratio is not None and family in _RATIO_FAMILIES:
        return max_ratio + gap
    return None


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _check(rps: float, label_rate: float, min_effect: float, margin: float, base: float) -> None:
    if not rps > 0:
        raise ValueError(f"rps: must be > 0 (got {rps!r})")
    if not 0 < label_rate <= 1:
        raise ValueError(f"label_rate: must be in (0, 1] (got {label_rate!r})")
    if not min_effect > margin:
        raise ValueError("min_effect: must exceed margin (the drop to catch beyond the allowed)")
    if not 0 < base < 1:
        raise ValueError(f"base: must be in (0, 1) for a proportion metric (got {base!r})")


def paired_variance(base: float, min_effect: float, disagreement: float | None = None) -> float:
    """Variance of one paired difference of 0/1 outcomes, candidate `min_effect` below `base`.

    `disagreement`: the share of requests on which exactly one version is right (at least
    the effect itself); None: the worst case, the two versions' errors never coincide.
    """
    cand = min(max(base - min_effect, 0.0), 1.0)
    worst = min(1.0, (1.0 - cand) + (1.0 - base))
    if disagreement is None:
        d = worst
    else:
        if not 0 <= disagreement <= 1:
            raise ValueError(f"disagreement: must be in [0, 1] (got {disagreement!r})")
        d = min(max(disagreement, abs(base - cand)), worst)
    return max(d - (base - cand) ** 2, 1e-12)


def step_can_decide(
    *,
    share_percent: float,
    rps: float,
    label_rate: float,
    min_effect: float,
    base: float = 0.9,
    margin: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.9,
    tests: int = 1,
    max_duration_s: float | None = None,
    like_for_like: bool = False,
    paired: bool = False,
    disagreement: float | None = None,
    as_good: bool = False,
    stable_sample_rate: float = 1.0,
) -> StepPlan:
    """The wait of one step for a proportion metric (accuracy, error rate) at `base`.

    By default: detecting a candidate `min_effect` below production against `margin` (a
    FAIL). `as_good=True`: a candidate as good as production showing it is no more than
    `min_effect` below (a PASS, or a not_fail step ruling out that regression); `margin`
    is then unused. Both are planned with the score form the judge runs: the boundary's
    variance is the one at the threshold tested where that is the larger.

    The controller calls this at rollout start and warns when `can_decide` is False.
    `like_for_like=True`: the canary is judged against a fresh baseline routed its own
    share, so the comparison arm has as many samples as the candidate (not the rest of
    the traffic): the wait is longer at small shares. `paired=True`: a paired canary's
    quality metric, judged on same-request pairs (`paired_variance`; see the module doc).
    `stable_sample_rate`: production's calls logged at that rate during the step
    (`logging.stable_sample_rate_during_rollouts`): fewer production samples per candidate
    sample, r(1 − π)/π instead of (1 − π)/π (a baseline or paired copy is kept in full).
    """
    _check(rps, label_rate, min_effect, 0.0 if as_good else margin, base)
    if tests < 1:
        raise ValueError("tests: must be ≥ 1")
    if not 0 < share_percent <= 100:
        raise ValueError(f"share_percent: must be in (0, 100] (got {share_percent!r})")
    rate = rps * share_percent / 100 * label_rate
    if share_percent >= 100:
        return StepPlan(share_percent, rate, None, None, 0.0, 0.0, max_duration_s)
    share = share_percent / 100
    # like for like, the baseline gets the canary's share while it fits; against
    # production, the candidate's share of the LOGGED rows (analysis/sampling.py)
    share = candidate_fraction(share) if like_for_like else logged_share(share, stable_sample_rate)
    a = alpha / tests
    threshold = min_effect if as_good else margin  # how far below production it is tested
    truth = 0.0 if as_good else min_effect  # how far below production the candidate is
    cand = min(max(base - truth, 1e-6), 1 - 1e-6)
    var_c, var_b = cand * (1 - cand), base * (1 - base)
    if paired:  # one pair per candidate sample: no second arm to wait for
        var_c, var_b = paired_variance(base, min_effect, disagreement), 0.0
    # The judge takes each arm's variance at the threshold it tests (the score form): the
    # candidate `threshold` below production; its own variance where that is larger.
    at = min(max(base - threshold, 1e-6), 1 - 1e-6)
    hyp_c = None if paired else at * (1 - at)
    g = abs(threshold - truth)
    n_any = anytime_sample_size(g, var_c, var_b, share, alpha=a, power=power,
                                hypothesis_variance_candidate=hyp_c)  # fmt: skip
    n_fix = fixed_horizon_sample_size(g, var_c, var_b, share, alpha=a, power=power)
    return StepPlan(share_percent, rate, n_any, n_fix, n_any / rate, n_fix / rate, max_duration_s)


def plan_steps(
    steps_percent: list[float],
    *,
    rps: float,
    label_rate: float,
    min_effect: float,
    base: float = 0.9,
    margin: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.9,
    tests: int = 1,
    max_duration_s: float | None = None,
    like_for_like: bool = False,
    paired: bool = False,
    disagreement: float | None = None,
    stable_sample_rate: float = 1.0,
) -> list[StepPlan]:
    return [
        step_can_decide(
            share_percent=s,
            rps=rps,
            label_rate=label_rate,
            min_effect=min_effect,
            base=base,
            margin=margin,
            alpha=alpha,
            power=power,
            tests=tests,
            max_duration_s=max_duration_s,
            like_for_like=like_for_like,
            paired=paired,
            disagreement=disagreement,
            stable_sample_rate=stable_sample_rate,
        )
        for s in steps_percent
    ]
