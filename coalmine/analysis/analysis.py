"""`Analysis`: feed outcomes per arm, ask for the judgement (pure; no gateway needed).

It owns the running statistics (metrics.py), the count e-values of error-rate criteria with
`max_ratio`, and the multiplicity budget across criteria × slices:

- Every statistical test runs at a Bonferroni share of α. With slicing on, half of α goes to
  the overall tests (α/2 ÷ C) and half to the slice tests (α/2 ÷ (C_sliced × max_slices)).
  The number of slices must be fixed in advance for this to hold under continuous looks,
  so only the first `max_slices` slice values seen are tracked (the rest are counted in a
  note). With `max_slices=0` the overall tests get all of α.
- Drift (descriptive) and critical error-class tripwires (deterministic) use no α.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coalmine.analysis import registry
from coalmine.analysis.criteria import Criterion, default_criteria
from coalmine.analysis.judge import Evidence, judge
from coalmine.analysis.metrics import ARMS, FLOOR, OVERALL, Obs, Stats
from coalmine.analysis.result import CriterionResult, Judgement, combine
from coalmine.analysis.sequential import ErrorCountEValue
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
    criteria: Sequence[Criterion], *, task: str, mode: str, noise_floor: bool = False
) -> None:
    """Reject criteria that cannot be judged in this mode or task, naming the criterion."""
    names = [c.name for c in criteria]
    for i, c in enumerate(criteria):
        where = f"criteria[{i}] ({c.name})"
        spec = c.spec
        if mode not in spec.modes:
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
    ) -> None:
        if mode not in ("canary", "shadow"):
            raise ValueError(f"mode: must be 'canary' or 'shadow' (got {mode!r})")
        if noise_floor and mode != "shadow":
            raise ValueError("noise_floor: a noise floor needs shadow mode (the same requests)")
        if task not in ("classification", "regression"):
            raise ValueError(f"task: must be 'classification' or 'regression' (got {task!r})")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
        if max_slices < 0:
            raise ValueError("max_slices: must be ≥ 0")
        if criteria is None:
            criteria = default_criteria(task, mode, noise_floor)
        self.criteria = [
            c if isinstance(c, Criterion) else Criterion.model_validate(c) for c in criteria
        ]
        if not self.criteria:
            raise ValueError("criteria: give at least one criterion")
        check_criteria(self.criteria, task=task, mode=mode, noise_floor=noise_floor)
        self.task, self.mode, self.alpha, self.max_slices = task, mode, alpha, max_slices
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

    # -- the multiplicity budget ---------------------------------------------------------------
    def _statistical(self) -> list[Criterion]:
        return [c for c in self.criteria if c.spec.family != "drift" and not _is_tripwire(c)]

    def _sliced(self, c: Criterion) -> bool:
        return c.per_slice and c.spec.family != "resource" and not _is_tripwire(c)

    def alpha_for(self, overall: bool) -> float:
        """The level of each overall (or each slice) test: α split by Bonferroni."""
        stat = self._statistical()
        sliced = [c for c in stat if self._sliced(c)]
        if not stat:
            return self.alpha
        if self.max_slices == 0 or not sliced:
            return self.alpha / len(stat)
        if overall:
            return self.alpha / 2 / len(stat)
        return self.alpha / 2 / (len(sliced) * self.max_slices)

    # -- feeding --------------------------------------------------------------------------------
    def observe_requests(self, arm: str, rows: Sequence[Obs]) -> None:
        arm = _arm(arm)
        self.stats.add_requests(arm, rows)
        if self._count_kappas:
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
        """The candidate's share of the compared traffic at canary weight `step` (bp).

        Like for like, the baseline is routed the canary's weight while the two fit
        (`routing.split.baseline_share`: equal up to 50%), so the candidate has half the
        compared traffic; against production, production has all the rest.
        """
        share = step / 10_000
        return candidate_fraction(share) if self.like_for_like else share

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
        latency_ms: Sequence[float] | None = None,
        errors: Sequence[str | bool | None] | None = None,
        status: Sequence[int] | None = None,
        slices: Sequence[Mapping[str, Any] | None] | None = None,
        steps: Sequence[int] | None = None,
        outcomes: Sequence[Mapping[str, float] | None] | None = None,
    ) -> None:
        """Outcomes of one arm, one entry per request in every list given.

        `labels[i] = None` means request i has no label (yet); `errors[i]` is an error class
        (http_5xx, timeout, connection, ...), True (counted as http_5xx) or None/False.
        """
        rows = _rows(predictions=predictions, labels=labels, latency_ms=latency_ms,
                     errors=errors, status=status, slices=slices, steps=steps,
                     outcomes=outcomes)  # fmt: skip
        self.observe_requests(arm, rows)
        self.observe_labels(arm, [r for r in rows if r.has_label or r.outcomes])

    def add_pairs(
        self,
        *,
        candidate: Sequence[Any],
        baseline: Sequence[Any],
        labels: Sequence[Any] | None = None,
        candidate_latency_ms: Sequence[float] | None = None,
        baseline_latency_ms: Sequence[float] | None = None,
        candidate_errors: Sequence[str | bool | None] | None = None,
        baseline_errors: Sequence[str | bool | None] | None = None,
        slices: Sequence[Mapping[str, Any] | None] | None = None,
        noise_baseline: Sequence[Any] | None = None,
    ) -> None:
        """Shadow: request i answered by both versions (predictions, latencies, errors).

        `noise_baseline[i]`: the answer of a fresh instance of production's version to the
        same request (None where it has none). Its agreement with production is the noise
        floor that `agreement`/`mean_abs_diff` criteria with `margin` are judged against;
        the Analysis must be built with `noise_floor=True` for such criteria.
        """
        c_rows = _rows(predictions=candidate, labels=labels, latency_ms=candidate_latency_ms,
                       errors=candidate_errors, slices=slices)  # fmt: skip
        b_rows = _rows(predictions=baseline, labels=labels, latency_ms=baseline_latency_ms,
                       errors=baseline_errors, slices=slices)  # fmt: skip
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
        self, arm: str, *, cpu: Iterable[float] = (), memory_mb: Iterable[float] = ()
    ) -> None:
        self.stats.add_resources(_arm(arm), cpu=cpu, memory_mb=memory_mb)

    # -- judging --
    def evidence(self, key: str, criterion: Criterion) -> Evidence:
        return Evidence(
            self.stats.slices[key], self.mode, key or None,
            self.evalues.get(f"{criterion.name}|{key}"),
        )  # fmt: skip

    def judge(self, now: float | None = None) -> Judgement:
        """Every criterion on all traffic, then on every tracked slice with candidate data."""
        results: list[CriterionResult] = []
        a_overall, a_slice = self.alpha_for(True), self.alpha_for(False)
        for c in self.criteria:
            results.append(judge(c, self.evidence(OVERALL, c), a_overall))
        for key, s in self.stats.slices.items():
            if key == OVERALL or s.candidate.requests == 0:
                continue
            for c in self.criteria:
                if self._sliced(c):
                    results.append(judge(c, self.evidence(key, c), a_slice))
        overall = self.stats.slices[OVERALL]
        notes = []
        if self.stats.untracked_slice_rows:
            notes.append(
                f"{self.stats.untracked_slice_rows:,} row-slice values beyond the first "
                f"{self.max_slices} slices were not judged per slice"
            )
        if self.noise_floor:
            notes.append(self.noise_floor_note())
        unscorable = overall.candidate.unscorable + overall.baseline.unscorable
        if unscorable:
            notes.append(f"{unscorable:,} labelled requests could not be scored (format)")
        return Judgement(
            combine(results), results, overall.candidate.requests, overall.baseline.requests,
            time.time() if now is None else now, notes,
        )  # fmt: skip

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
            "stats": self.stats.to_dict(),
            "evalues": {k: e.to_dict() for k, e in self.evalues.items()},
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Analysis:
        a = cls(
            [Criterion.model_validate(c) for c in state["criteria"]], task=state["task"],
            mode=state["mode"], alpha=state["alpha"], classes=state.get("classes"),
            max_slices=state["max_slices"], noise_floor=bool(state.get("noise_floor", False)),
            like_for_like=bool(state.get("like_for_like", False)),
        )  # fmt: skip
        a.stats.load(state["stats"])
        a.evalues = {k: ErrorCountEValue.from_dict(v) for k, v in state["evalues"].items()}
        return a


def _rows(
    *,
    predictions: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    latency_ms: Sequence[float] | None = None,
    errors: Sequence[str | bool | None] | None = None,
    status: Sequence[int] | None = None,
    slices: Sequence[Mapping[str, Any] | None] | None = None,
    steps: Sequence[int] | None = None,
    outcomes: Sequence[Mapping[str, float] | None] | None = None,
) -> list[Obs]:
    given = {
        "predictions": predictions, "labels": labels, "latency_ms": latency_ms,
        "errors": errors, "status": status, "slices": slices, "steps": steps,
        "outcomes": outcomes,
    }  # fmt: skip
    lengths = {k: len(v) for k, v in given.items() if v is not None}
    if not lengths:
        raise ValueError("give at least one of predictions, labels, latency_ms, errors, outcomes")
    n = next(iter(lengths.values()))
    for k, m in lengths.items():
        if m != n:
            raise ValueError(f"{k}: has {m} entries, expected {n} like {next(iter(lengths))}")
    rows = []
    for i in range(n):
        err = errors[i] if errors is not None else None
        error_class = "http_5xx" if err is True else (None if err in (None, False) else str(err))
        code = int(status[i]) if status is not None else (500 if error_class == "http_5xx" else 200)
        if error_class in ("timeout", "connection") and status is None:
            code = 0
        lat = float(latency_ms[i]) if latency_ms is not None and latency_ms[i] is not None else None
        label = labels[i] if labels is not None else None
        if isinstance(label, float) and math.isnan(label):
            label = None
        rows.append(Obs(
            prediction=predictions[i] if predictions is not None else None,
            latency_ms=lat, status=code, error_class=error_class,
            slices=slices[i] if slices is not None else None,
            step=int(steps[i]) if steps is not None else 0,
            label=label, has_label=label is not None,
            outcomes=outcomes[i] if outcomes is not None else None,
        ))  # fmt: skip
    return rows


assert set(_ARM_ALIASES.values()) == set(ARMS)
