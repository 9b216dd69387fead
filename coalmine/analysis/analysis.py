"""`Analysis`: feed outcomes per arm, ask for the judgement (pure; no gateway needed).

It owns the running statistics (metrics.py), the count e-values of error-rate criteria with
`max_ratio`, and the multiplicity budget across criteria × slices:

- Weighted Holm over every statistical test (family.py): with slicing on, half of α goes to
  the overall tests (α/2 ÷ C each in the first round) and half to the slice tests
  (α/2 ÷ (C_sliced × max_slices)); each FAIL frees its share for the others. With
  `max_slices=0` the overall tests get all of α.
- At most `max_slices` slice values are judged: the largest by rows, not the first seen
  (slices.py); the choice never looks at an outcome, so α holds. Rows of other values are
  counted in a note. A judged slice that looks worse than allowed holds a PASS back.
- Drift (descriptive) and critical error-class tripwires (deterministic) use no α.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coalmine.analysis import inputs, outputs, registry
from coalmine.analysis.criteria import Criterion, default_criteria
from coalmine.analysis.family import holm
from coalmine.analysis.judge import Evidence, judge
from coalmine.analysis.metrics import ARMS, FLOOR, OVERALL, Obs, Stats
from coalmine.analysis.outputs import comparable
from coalmine.analysis.result import CriterionResult, Judgement, combine
from coalmine.analysis.sampling import LoggedRate, logged_share
from coalmine.analysis.sequential import ErrorCountEValue, Verdict
from coalmine.routing.split import candidate_fraction

__all__ = ["Analysis"]

_ARM_ALIASES = {
    "candidate": "candidate", "canary": "candidate", "shadow": "candidate",
    "baseline": "baseline", "production": "baseline", "stable": "baseline",
}  # fmt: skip


def _arm(arm: str) -> str:
    try:
        return _ARM_ALIASES[arm]
    except KeyError:
        raise ValueError(f"arm: must be 'candidate' or 'baseline' (got {arm!r})") from None


def check_criteria(
    criteria: Sequence[Criterion],
    *,
    task: str,
    mode: str,
    noise_floor: bool = False,
    paired: bool = False,
) -> None:
    """Reject criteria that cannot be judged in this mode or task, naming the criterion.

    `paired`: a paired canary, where the stable version also answered each canary request,
    so agreement-like criteria (same-request comparisons) can be judged in canary too.
    """
    names = [c.name for c in criteria]
    for i, c in enumerate(criteria):
        where = f"criteria[{i}] ({c.name})"
        spec = c.spec
        same_requests = paired and mode == "canary" and spec.family == "agreement"
        if mode not in spec.modes and not same_requests:
            raise ValueError(f"{where}: {c.metric} can be judged in {'/'.join(spec.modes)} only")
        if task not in spec.tasks:
            raise ValueError(f"{where}: {c.metric} applies to {'/'.join(spec.tasks)} models")
        if spec.family == "agreement" and c.margin is not None and not noise_floor:
            limit = "min" if c.metric == "agreement" else "max"
            raise ValueError(
                f"{where}: {c.metric} margin needs a baseline (noise floor): run the shadow "
                f"with a baseline, or give an absolute {limit} instead"
            )
        if names.count(c.name) > 1:
            raise ValueError(f"{where}: duplicate criterion name; give each a distinct name")


def _is_tripwire(c: Criterion) -> bool:
    return bool(c.error_classes) and not any(
        getattr(c, k) is not None for k in ("margin", "max_ratio", "max", "min")
    )


class Analysis:
    """Judge a candidate against production from batches of outcomes.

    mode "canary": each arm answered different requests (pass `steps`, the canary weight in
    basis points, if it changed); `like_for_like=True` when the baseline arm is a fresh
    instance routed the canary's own share (not production's remaining traffic).
    mode "shadow": both answered the same requests; feed them
    with `add_pairs` so every request counts for both.
    """

    def __init__(
        self,
        criteria: Sequence[Criterion | Mapping[str, Any]] | None = None,
        *,
        task: str = "classification",
        mode: str = "canary",
        alpha: float = 0.05,
        classes: list[Any] | None = None,
        max_slices: int = 20,
        noise_floor: bool = False,
        like_for_like: bool = False,
        latency_unit: str = "ms",
        paired: bool = False,
    ) -> None:
        alpha = inputs.check_alpha(alpha)
        inputs.latencies_ms(None, latency_unit)  # refuses an unknown unit
        if mode not in ("canary", "shadow"):
            raise ValueError(f"mode: must be 'canary' or 'shadow' (got {mode!r})")
        if noise_floor and mode != "shadow":
            raise ValueError("noise_floor: a noise floor needs shadow mode (the same requests)")
        if task not in ("classification", "regression"):
            raise ValueError(f"task: must be 'classification' or 'regression' (got {task!r})")
        if isinstance(max_slices, bool) or not isinstance(inputs.plain(max_slices), int):
            raise ValueError(f"max_slices: must be a whole number ≥ 0 (got {max_slices!r})")
        if max_slices < 0:
            raise ValueError("max_slices: must be ≥ 0")
        if criteria is None:
            criteria = default_criteria(task, mode, noise_floor)
        self.criteria = [
            c if isinstance(c, Criterion) else Criterion.model_validate(c) for c in criteria
        ]
        if not self.criteria:
            raise ValueError("criteria: give at least one criterion")
        if paired and mode != "canary":
            raise ValueError("paired: a paired canary needs mode 'canary'")
        check_criteria(self.criteria, task=task, mode=mode, noise_floor=noise_floor, paired=paired)
        self.paired = paired
        self.task, self.mode, self.alpha = task, mode, alpha
        self.max_slices = int(max_slices)
        self.latency_unit = latency_unit
        # Rows fed through add_batch without steps, per look (judge call): [candidate,
        # baseline] since the last look and pooled over earlier looks. A canary share that
        # changes between looks confounds the pooled comparison (the ramp trap), so the
        # judge refuses it (see `_check_unstepped`).
        self._unstepped = {"look": [0, 0], "pooled": [0, 0]}
        self._stepped_batches = False
        self.noise_floor = noise_floor
        # A canary judged against a fresh baseline routed the same share: each error event
        # is the candidate's with probability θ(κ, ½) under H0, whatever the canary weight
        # (the count e-value conditions on the candidate's share of the COMPARED traffic;
        # see `_candidate_share`).
        self.like_for_like = like_for_like
        self.classes = classes
        user = {c.metric: registry.load_user_metric(c.metric) for c in self.criteria
                if c.spec.family == "user"}  # fmt: skip
        outcomes = [registry.outcome_name(c.metric) for c in self.criteria]
        self.stats = Stats(
            task=task, classes=classes, user_metrics=user,
            outcome_names=[o for o in outcomes if o], max_slices=max_slices,
            track_drift=any(c.spec.family == "drift" for c in self.criteria),
        )  # fmt: skip
        self._count_kappas = {
            c.name: float(c.max_ratio) for c in self.criteria
            if c.metric == "error_rate" and c.max_ratio is not None and mode == "canary"
        }  # fmt: skip
        self.evalues: dict[str, ErrorCountEValue] = {}
        # the rate production's rows were logged at, per step (sampling.py): the count test
        # conditions on the candidate's share of LOGGED calls
        self.logged_rate = LoggedRate()

    # -- the multiplicity budget ---------------------------------------------------------------
    def _statistical(self) -> list[Criterion]:
        return [c for c in self.criteria if c.spec.family != "drift" and not _is_tripwire(c)]

    def _sliced(self, c: Criterion) -> bool:
        return c.per_slice and c.spec.family != "resource" and not _is_tripwire(c)

    def weight(self, overall: bool) -> float:
        """Holm weight of each overall (or each slice) test; all weights sum to 1 (family.py)."""
        stat = self._statistical()
        sliced = [c for c in stat if self._sliced(c)]
        if not stat:
            return 1.0
        if self.max_slices == 0 or not sliced:
            return 1.0 / len(stat)
        if overall:
            return 0.5 / len(stat)
        return 0.5 / (len(sliced) * self.max_slices)

    def alpha_for(self, overall: bool) -> float:
        """The level of each overall (or each slice) test in Holm's first round (α·weight)."""
        return self.alpha * self.weight(overall)

    # -- feeding --------------------------------------------------------------------------------
    def observe_requests(self, arm: str, rows: Sequence[Obs]) -> None:
        arm = _arm(arm)
        self.stats.add_requests(arm, rows)
        if arm == "baseline":
            by_step: dict[int, list[float]] = defaultdict(list)
            for obs in rows:
                by_step[obs.step].append(obs.weight)
            for step, weights in by_step.items():
                self.logged_rate.observe(step, weights)
        if self._count_kappas:
            # a slice value no longer tracked (slices.py) takes its count test with it
            for k in [k for k in self.evalues if k.partition("|")[2] not in self.stats.slices]:
                del self.evalues[k]
            self._update_counts(arm, rows)

    def _update_counts(self, arm: str, rows: Iterable[Obs]) -> None:
        errors: Counter[tuple[str, int]] = Counter()
        for obs in rows:
            if obs.is_error and 0 < obs.step < 10_000:
                for key in self.stats.keys_for(obs.slices):
                    errors[(key, obs.step)] += 1
        for (key, step), count in errors.items():
            for name, kappa in self._count_kappas.items():
                e = self.evalues.get(f"{name}|{key}")
                if e is None:
                    e = self.evalues[f"{name}|{key}"] = ErrorCountEValue(kappa)
                c, b = (count, 0) if arm == "candidate" else (0, count)
                e.update(c, b, self._candidate_share(step))

    def _candidate_share(self, step: int) -> float:
        """The candidate's share of the compared LOGGED rows at canary weight `step` (bp).

        Like for like, the baseline is routed the canary's weight while the two fit
        (`routing.split.baseline_share`: equal up to 50%), so the candidate has half the
        compared traffic; against production, production has all the rest, of which only
        the sampled rows are logged (`sampling.logged_share`).
        """
        share = step / 10_000
        share = candidate_fraction(share) if self.like_for_like else share
        return logged_share(share, self.logged_rate.rate(step))

    def observe_labels(self, arm: str, rows: Sequence[Obs]) -> None:
        self.stats.add_labels(_arm(arm), rows)

    def observe_request_pairs(self, pairs: Sequence[tuple[Obs, Obs]]) -> None:
        self.stats.add_request_pairs(pairs)

    def observe_label_pairs(self, pairs: Sequence[tuple[Obs, Obs]]) -> None:
        self.stats.add_label_pairs(pairs)

    def observe_request_triples(self, triples: Sequence[tuple[Obs, Obs, Obs]]) -> None:
        """Noise floor: (candidate, production, fresh baseline) answers to one request."""
        self.stats.add_request_triples(triples)

    def add_batch(
        self,
        arm: str,
        *,
        predictions: Sequence[Any] | None = None,
        labels: Sequence[Any] | None = None,
        latency_ms: Sequence[Any] | None = None,
        errors: Sequence[Any] | None = None,
        status: Sequence[Any] | None = None,
        slices: Sequence[Mapping[str, Any] | None] | None = None,
        steps: Sequence[Any] | None = None,
        outcomes: Sequence[Mapping[str, float] | None] | None = None,
        latency_unit: str | None = None,
    ) -> None:
        """Outcomes of one arm, one entry per request in every list given (lists or arrays).

        `labels[i] = None` means request i has no label (yet). `errors[i]`: None/False/0,
        True/1 (an HTTP 5xx), an HTTP status code, or an error class (http_5xx, timeout,
        connection, http_4xx, http_503, ...); anything else is refused. `latency_ms` is in
        `latency_unit` ("ms", "s" or "us"; the Analysis's unit by default). `steps[i]`: the
        canary weight in basis points (5% = 500) when request i was made; give it whenever
        the share changed during the data (the judge refuses a share that varied between
        looks without it). The rules: `coalmine.analysis.inputs`.
        """
        arm = _arm(arm)
        rows = _rows(predictions=predictions, labels=labels, latency_ms=latency_ms,
                     errors=errors, status=status, slices=slices, steps=steps,
                     outcomes=outcomes, latency_unit=latency_unit or self.latency_unit)  # fmt: skip
        check_labels(rows, self.task, self.classes)
        if steps is None:
            self._unstepped["look"][ARMS.index(arm)] += len(rows)
        else:
            self._stepped_batches = True
        self.observe_requests(arm, rows)
        self.observe_labels(arm, [r for r in rows if r.has_label or r.outcomes])

    def add_pairs(
        self,
        *,
        candidate: Sequence[Any],
        baseline: Sequence[Any],
        labels: Sequence[Any] | None = None,
        candidate_latency_ms: Sequence[Any] | None = None,
        baseline_latency_ms: Sequence[Any] | None = None,
        candidate_errors: Sequence[Any] | None = None,
        baseline_errors: Sequence[Any] | None = None,
        slices: Sequence[Mapping[str, Any] | None] | None = None,
        noise_baseline: Sequence[Any] | None = None,
        latency_unit: str | None = None,
    ) -> None:
        """Shadow: request i answered by both versions (predictions, latencies, errors).

        `noise_baseline[i]`: the answer of a fresh instance of production's version to the
        same request (None where it has none). Its agreement with production is the noise
        floor that `agreement`/`mean_abs_diff` criteria with `margin` are judged against;
        the Analysis must be built with `noise_floor=True` for such criteria.
        """
        unit = latency_unit or self.latency_unit
        c_rows = _rows(predictions=candidate, labels=labels, latency_ms=candidate_latency_ms,
                       errors=candidate_errors, slices=slices, latency_unit=unit)  # fmt: skip
        b_rows = _rows(predictions=baseline, labels=labels, latency_ms=baseline_latency_ms,
                       errors=baseline_errors, slices=slices, latency_unit=unit)  # fmt: skip
        check_labels(c_rows, self.task, self.classes)
        check_labels(b_rows, self.task, self.classes)
        noise_baseline = inputs.plain_list(noise_baseline, "noise_baseline")
        if len(c_rows) != len(b_rows):
            raise ValueError("baseline: must have as many entries as candidate")
        if noise_baseline is not None and len(noise_baseline) != len(c_rows):
            raise ValueError("noise_baseline: must have as many entries as candidate")
        self.observe_requests("candidate", c_rows)
        self.observe_requests("baseline", b_rows)
        pairs = list(zip(c_rows, b_rows, strict=True))
        self.observe_request_pairs(pairs)
        if noise_baseline is not None:
            self.observe_request_triples([
                (c, b, Obs(prediction=n, slices=b.slices))
                for (c, b), n in zip(pairs, noise_baseline, strict=True) if n is not None
            ])  # fmt: skip
        labelled = [(c, b) for c, b in pairs if c.has_label]
        self.observe_labels("candidate", [c for c, _ in labelled])
        self.observe_labels("baseline", [b for _, b in labelled])
        self.observe_label_pairs(labelled)

    def add_resources(
        self,
        arm: str,
        *,
        cpu: Iterable[float] = (),
        memory_mb: Iterable[float] = (),
        cpu_lag: Iterable[float] = (),
        memory_lag: Iterable[float] = (),
    ) -> None:
        """Window samples of one version (analysis/resources.py), with the products of
        successive ones (`*_lag`) that the resource criteria's autocorrelation uses."""
        self.stats.add_resources(_arm(arm), cpu=cpu, memory_mb=memory_mb, cpu_lag=cpu_lag,
                                 memory_lag=memory_lag)  # fmt: skip

    # -- judging --
    def evidence(self, key: str, criterion: Criterion) -> Evidence:
        return Evidence(
            self.stats.slices[key], self.mode, key or None,
            self.evalues.get(f"{criterion.name}|{key}"),
        )  # fmt: skip

    def _check_unstepped(self) -> None:
        """Refuse rows without steps whose canary share changed between looks.

        Pooled over a ramp, a base rate that drifts while the share grows fakes a difference
        (Simpson); without the share per request the judge cannot stratify, so it refuses
        rather than judge (an A/A ramp fed this way failed every time).
        """
        look, pooled = self._unstepped["look"], self._unstepped["pooled"]
        if self.mode != "canary" or self.like_for_like or not (look[0] and look[1]):
            return
        if pooled[0] and pooled[1]:
            n1, n2 = sum(pooled), sum(look)
            f1, f2 = pooled[0] / n1, look[0] / n2
            f = (pooled[0] + look[0]) / (n1 + n2)
            z = abs(f2 - f1) / math.sqrt(f * (1 - f) * (1 / n1 + 1 / n2))
            if z > 5 and max(f1, f2) > 1.2 * min(f1, f2):
                raise ValueError(
                    f"steps: the candidate's share of the rows changed from {f1:.1%} to "
                    f"{f2:.1%} between looks and no steps were given: pooled over a ramp the "
                    "comparison is confounded; pass steps (the canary weight in basis points, "
                    "5% = 500) with every batch"
                )
        pooled[0] += look[0]
        pooled[1] += look[1]
        look[0] = look[1] = 0

    def _check_shares(self) -> None:
        """Refuse steps whose stated share is 20× off the candidate's share of the rows.

        The count e-value conditions on the stated share of each error event; steps in
        percent (5 for 5%) or as fractions scaled wrong would judge against a share 100×
        off (an A/A ramp in percent failed every time). A units check, not a sample-ratio
        test: checked for steps given to `add_batch` when an error-count test uses them.
        """
        if not (self._stepped_batches and self._count_kappas):
            return
        s = self.stats.slices[OVERALL]
        for step in sorted(s.candidate.steps.keys() & s.baseline.steps.keys()):
            if not 0 < step < 10_000:
                continue
            n_c = s.candidate.steps[step].moments.get("error")
            n_b = s.baseline.steps[step].moments.get("error")
            if n_c is None or n_b is None or n_c.n < 50 or n_b.n < 50:
                continue
            seen, stated = n_c.n / (n_c.n + n_b.n), self._candidate_share(step)
            if not stated / 20 <= seen <= stated * 20:
                raise ValueError(
                    f"steps: at step {step} bp ({step / 100:g}% canary weight) the candidate "
                    f"has {seen:.2%} of the rows; steps are basis points (5% = 500), and "
                    "both arms' rows of a step must all be given for the error-count test"
                )

    def input_notes(self) -> list[str]:
        """Inputs that could not be used, said in the judgement (never dropped silently)."""
        notes = []
        bad = self.stats.bad_latency
        if any(bad.values()):
            notes.append(
                f"latency: {bad['candidate']:,} candidate and {bad['baseline']:,} baseline "
                "values were NaN, infinite or negative and were not used"
            )
        if self.stats.label_mismatch:
            notes.append(
                f"labels: {self.stats.label_mismatch:,} labelled requests were not scored: "
                f"{self.stats.mismatch_example} (a class name against a class index); give "
                "classes=[...] to map indices to names"
            )
        overall = self.stats.slices[OVERALL]
        for arm in ARMS:
            h = overall.arm(arm).latency
            if h.n >= 20 and h.counts[-1] >= 0.05 * h.n:
                notes.append(
                    f"latency: {h.counts[-1] / h.n:.0%} of {arm} latencies exceed "
                    f"{h.high:,.0f} ms, beyond the quantile histogram, so quantile criteria "
                    "cannot decide; if these are microseconds, pass latency_unit='us'"
                )
        if self.logged_rate.sampled:
            rows = overall.baseline.requests
            calls = self.logged_rate.calls()
            notes.append(
                f"sampled: production's {rows:,} logged rows stand for ~{calls:,.0f} calls "
                f"(logged at {rows / calls:.3g}); counts of production below are of logged rows"
            )
        return notes

    def judge(self, now: float | None = None) -> Judgement:
        """Every criterion on all traffic and on every judged slice, under weighted Holm.

        The family-wise error over criteria × slices stays ≤ α (family.py); which slices
        are judged depends on their rows only (slices.py). A PASS is held back while a
        judged slice looks worse than allowed and is not yet decided (`_holding`).
        """
        self._check_unstepped()
        self._check_shares()
        self.stats.pool.admit()
        stat = {c.name for c in self._statistical()}
        members: dict[tuple[str, str], float] = {}
        others: list[tuple[Criterion, str]] = []  # drift and tripwires: no α
        keys = [OVERALL] + [k for k in self.stats.judged
                            if self.stats.slices[k].candidate.requests > 0]  # fmt: skip
        by_name = {c.name: c for c in self.criteria}
        for key in keys:
            for c in self.criteria:
                if key != OVERALL and not self._sliced(c):
                    continue
                if c.name in stat:
                    members[(c.name, key)] = self.weight(key == OVERALL)
                else:
                    others.append((c, key))

        def judge_at(member: tuple[str, str], level: float) -> CriterionResult:
            name, key = member
            c = by_name[name]
            return judge(c, self.evidence(key, c), level)

        held = holm(members, self.alpha, judge_at)
        done = {**held, **{(c.name, k): judge(c, self.evidence(k, c), self.alpha_for(k == OVERALL))
                           for c, k in others}}  # fmt: skip
        # overall first, then slices, each in criteria order
        results = [done[(c.name, k)] for k in keys for c in self.criteria if (c.name, k) in done]
        overall = self.stats.slices[OVERALL]
        notes = []
        verdict = combine(results)
        holding = self._holding(results)
        if verdict is Verdict.PASS and holding:
            verdict = Verdict.INCONCLUSIVE
            notes.append(
                "PASS held back: " + "; ".join(
                    f"slice {r.slice} {r.name} looks worse than allowed but is not decided yet"
                    for r in holding[:5]
                ) + (f" (and {len(holding) - 5} more)" if len(holding) > 5 else "")
            )  # fmt: skip
        unjudged = self.stats.pool.unjudged_rows()
        if unjudged:
            notes.append(
                f"slices: {len(self.stats.judged)} slice values judged (at most "
                f"{self.max_slices}, the largest by rows); {unjudged:,} row-slice values of "
                "other values were judged on all traffic only"
            )
        if self.noise_floor:
            notes.append(self.noise_floor_note())
        notes += self.input_notes()
        unscorable = overall.candidate.unscorable + overall.baseline.unscorable
        if unscorable:
            notes.append(f"{unscorable:,} labelled requests could not be scored (format)")
        return Judgement(
            verdict, results, overall.candidate.requests, overall.baseline.requests,
            time.time() if now is None else now, notes,
            [(r.name, r.slice) for r in holding if r.slice is not None],
        )  # fmt: skip

    def _holding(self, results: Sequence[CriterionResult]) -> list[CriterionResult]:
        """Slice results that hold a PASS back: undecided, with the estimate beyond the limit.

        A small slice may stay INCONCLUSIVE for ever, so undecided alone does not hold a
        PASS back; one whose point estimate is already on the wrong side of its threshold
        does, until its test decides (FAIL) or its estimate comes back (before, a PASS could
        be given just before the failing slice was named). Deliberately on the safe side:
        in an A/A of 50 Zipf slices (margin 5 pts, 1,000 calls an arm a look) the first
        PASS came at look 3–10 instead of 0–2, 3 runs of 10 not within 16 looks; a rule
        needing the slice to FAIL at level ½ cost nothing there but let a 20-point worse
        slice (5.5% of traffic) PASS in 10 of 10 runs, its anytime CS being still wide.
        """
        by_name = {c.name: c for c in self.criteria}
        out = []
        for r in results:
            c = by_name[r.name]
            if r.slice is None or r.verdict is not Verdict.INCONCLUSIVE or r.estimate != r.estimate:
                continue
            if c.margin is not None and c.spec.family != "drift":
                higher = c.higher_is_better
            else:
                higher = c.min is not None and c.max is None and c.max_ratio is None
            if (r.estimate < r.threshold) if higher else (r.estimate > r.threshold):
                out.append(r)
        return out

    def noise_floor_note(self) -> str:
        """The noise floor itself: how closely a fresh baseline matches production."""
        from coalmine.analysis.judge import _one_sample
        from coalmine.analysis.sentence import level, value

        classification = self.task == "classification"
        key = ("agree" if classification else "abs_diff") + FLOOR
        m = self.stats.slices[OVERALL].pairs.side(key, "b")
        if m.n == 0:
            return "noise floor: no request answered by production, shadow and baseline yet"
        iv = _one_sample(m, self.alpha, key)
        show = (lambda x: f"{100 * x:.1f}%") if classification else (lambda x: value(x, ""))
        what = "agrees with production on" if classification else "differs from production by"
        cs = f"({level(self.alpha)} CS {show(iv.lower)} to {show(iv.upper)})"
        per = "of" if classification else "on average over"
        return (
            f"noise floor: a fresh baseline of production's version {what} {show(m.mean)} "
            f"{cs} {per} {m.n:,} requests"
        )

    # -- persistence --
    def state_dict(self) -> dict[str, Any]:
        return {
            "criteria": [c.model_dump() for c in self.criteria],
            "task": self.task, "mode": self.mode, "alpha": self.alpha,
            "classes": self.classes, "max_slices": self.max_slices,
            "noise_floor": self.noise_floor, "like_for_like": self.like_for_like,
            "paired": self.paired, "latency_unit": self.latency_unit, "unstepped": self._unstepped,
            "stepped_batches": self._stepped_batches,
            "stats": self.stats.to_dict(),
            "evalues": {k: e.to_dict() for k, e in self.evalues.items()},
            "logged_rate": self.logged_rate.to_dict(),
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Analysis:
        a = cls(
            [Criterion.model_validate(c) for c in state["criteria"]], task=state["task"],
            mode=state["mode"], alpha=state["alpha"], classes=state.get("classes"),
            max_slices=state["max_slices"], noise_floor=bool(state.get("noise_floor", False)),
            like_for_like=bool(state.get("like_for_like", False)),
            latency_unit=state.get("latency_unit", "ms"),
            paired=bool(state.get("paired", False)),
        )  # fmt: skip
        a.stats.load(state["stats"])
        got = state.get("unstepped") or {}
        a._unstepped = {k: [int(x) for x in got.get(k, [0, 0])] for k in ("look", "pooled")}
        a._stepped_batches = bool(state.get("stepped_batches", False))
        a.evalues = {k: ErrorCountEValue.from_dict(v) for k, v in state["evalues"].items()}
        a.logged_rate = LoggedRate.from_dict(state.get("logged_rate"))
        return a


def _rows(
    *,
    predictions: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    latency_ms: Sequence[Any] | None = None,
    errors: Sequence[Any] | None = None,
    status: Sequence[Any] | None = None,
    slices: Sequence[Mapping[str, Any] | None] | None = None,
    steps: Sequence[Any] | None = None,
    outcomes: Sequence[Mapping[str, float] | None] | None = None,
    latency_unit: str = "ms",
) -> list[Obs]:
    """One Obs per request, every list read by the rules of `inputs` (errors refused there)."""
    given = {
        "predictions": inputs.plain_list(predictions, "predictions"),
        "labels": inputs.plain_list(labels, "labels"),
        "latency_ms": inputs.plain_list(latency_ms, "latency_ms"),
        "errors": inputs.plain_list(errors, "errors"),
        "status": inputs.plain_list(status, "status"),
        "slices": inputs.plain_list(slices, "slices"),
        "steps": inputs.plain_list(steps, "steps"),
        "outcomes": inputs.plain_list(outcomes, "outcomes"),
    }
    lengths = {k: len(v) for k, v in given.items() if v is not None}
    if not lengths:
        raise ValueError("give at least one of predictions, labels, latency_ms, errors, outcomes")
    n = next(iter(lengths.values()))
    for k, m in lengths.items():
        if m != n:
            raise ValueError(f"{k}: has {m} entries, expected {n} like {next(iter(lengths))}")
    preds, labs = given["predictions"], given["labels"]
    outcomes_of = inputs.error_outcomes(given["errors"], given["status"], n)
    lat = inputs.latencies_ms(given["latency_ms"], latency_unit)
    step = inputs.steps_bp(given["steps"])
    sl, out = given["slices"], given["outcomes"]
    rows = []
    for i in range(n):
        label = labs[i] if labs is not None else None
        if isinstance(label, float) and math.isnan(label):
            label = None
        error_class, code = outcomes_of[i]
        rows.append(Obs(
            prediction=preds[i] if preds is not None else None,
            latency_ms=lat[i] if lat is not None else None, status=code,
            error_class=error_class, slices=sl[i] if sl is not None else None,
            step=step[i] if step is not None else 0, label=label, has_label=label is not None,
            outcomes=out[i] if out is not None else None,
        ))  # fmt: skip
    return rows


def check_labels(
    rows: Sequence[Obs], task: str, classes: Sequence[Any] | None, *, field: str = "labels"
) -> None:
    """Refuse labels whose type can never match the predicted classes (an index vs a name)."""
    if task != "classification":
        return
    checked: set[tuple[Any, ...]] = set()
    for i, r in enumerate(rows):
        if not r.has_label or r.prediction is None or isinstance(r.label, dict | list):
            continue
        key = _kinds(r.prediction, r.label)
        if key is not None:
            if key in checked:  # same types (and names) as a row already checked
                continue
            checked.add(key)
        for out in outputs.normalize(r.prediction, task):
            if (
                out is not None
                and out.cls is not None
                and not comparable(out.cls, r.label, classes)
            ):
                hint = (
                    f"not in classes {list(classes)}" if classes is not None else
                    "pass classes=[...] (classes[i] is the name of class index i) to map them"
                )  # fmt: skip
                raise ValueError(
                    f"{field}[{i}]: {r.label!r} cannot match the predicted class {out.cls!r} "
                    f"(a class name against a class index): {hint}"
                )


def _kinds(prediction: Any, label: Any) -> tuple[Any, ...] | None:
    """What decides whether a scalar prediction's class can match a label (None: not scalar).

    Strings count by value (a name or a digit string), floats by whether they read as a
    probability or a whole number, other scalars by type.
    """

    def kind(x: Any) -> Any:
        if isinstance(x, str):
            return x
        if isinstance(x, float):
            return (x.is_integer(), 0.0 <= x <= 1.0)
        return None

    if not isinstance(prediction, bool | int | float | str):
        return None
    return (type(prediction), kind(prediction), type(label), kind(label))


assert set(_ARM_ALIASES.values()) == set(ARMS)
