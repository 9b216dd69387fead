"""The one rule for "no data": where each criterion's data comes from, and when it has none.

A criterion that has received no data has not been judged: with `must: not_fail` it would
never FAIL, so a step would advance on "nothing failed" without the candidate having been
looked at. One rule, used in three places:

- at rollout start (`source_problem`): each criterion's data source is checked against what
  is known about the model. A source that cannot exist as configured (a `cpu`/`memory`
  criterion and no resource source for the model) **refuses** the spec; a source that exists
  but has not been seen yet for this model (labels, `outcome:<name>`, scores for
  `log_loss`/`auc`) is a **warning**: the data may still arrive, and the step holds until it
  does;
- during a step (`lacks_data`): an overall criterion whose result counts no candidate data
  (or, for a comparison with production, no production data) holds the step, whatever its
  `must`; at the step's max duration it ends per `on_inconclusive`, naming the criterion;
- in the planner (`needs_labels`): only criteria fed by feedback are sized by the label rate.

Pure: facts about the model come in as `SourceFacts`, results as CriterionResult or its dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from coalmine.analysis.criteria import Criterion

__all__ = [
    "SourceFacts",
    "SourceProblem",
    "lacks_data",
    "needs_labels",
    "needs_scores",
    "source_of",
    "source_problem",
]

# The families judged on feedback labels (user metrics are f(prediction, label)).
_LABELLED = frozenset({"quality", "auc", "user"})
# Scores (probabilities) beside the predicted label: log loss and AUC rank by them.
_SCORED = frozenset({"log_loss", "auc"})


@dataclass(frozen=True)
class SourceFacts:
    """What is known about a model's data at rollout start (gathered from the store)."""

    labels: bool = False  # a labelled feedback row for one of this model's requests
    outcomes: frozenset[str] = field(default_factory=frozenset)  # outcome names seen
    scores: bool = False  # a logged prediction of this model carries scores/probabilities
    resources: bool = False  # a CPU/memory source is configured for this model


@dataclass(frozen=True)
class SourceProblem:
    """A criterion whose data source is missing: `refuse` (422) or `warn`."""

    action: Literal["refuse", "warn"]
    criterion: str
    reason: str

    def sentence(self) -> str:
        return f"{self.criterion}: {self.reason}"


def needs_labels(criterion: Criterion) -> bool:
    """True when the criterion is computed from feedback labels (error rate, latency: no)."""
    return criterion.spec.family in _LABELLED


def needs_scores(criterion: Criterion) -> bool:
    return criterion.metric in _SCORED


def source_of(criterion: Criterion) -> str:
    """Where the criterion's data comes from, in a few words (README, warnings)."""
    fam = criterion.spec.family
    if fam == "resource":
        return "the versions' CPU/memory readings (a resource source)"
    if fam == "outcome":
        return f"the outcome {criterion.metric.split(':', 1)[1]!r} in feedback"
    if needs_scores(criterion):
        return "feedback labels and the scores logged with each prediction"
    if needs_labels(criterion):
        return "feedback labels"
    return "the logged calls"


def source_problem(criterion: Criterion, facts: SourceFacts) -> SourceProblem | None:
    """Why `criterion` may get no data for this model, or None when its source is there.

    Refuse only what cannot get data as configured; warn about what has not been seen yet.
    """
    name = criterion.name or criterion.metric
    fam = criterion.spec.family
    if fam == "resource" and not facts.resources:
        return SourceProblem(
            "refuse",
            name,
            "no CPU/memory source is configured for this model, so it would never get data",
        )
    if fam == "outcome":
        outcome = criterion.metric.split(":", 1)[1]
        if outcome not in facts.outcomes:
            return SourceProblem(
                "warn",
                name,
                f"no feedback for this model has carried the outcome {outcome!r} yet; "
                "steps hold until it arrives",
            )
        return None
    if needs_labels(criterion) and not facts.labels:
        return SourceProblem(
            "warn", name, "no labelled feedback seen for this model yet; steps hold until some "
            "arrives",
        )  # fmt: skip
    if needs_scores(criterion) and not facts.scores:
        return SourceProblem(
            "warn",
            name,
            "no logged prediction of this model carries scores (probabilities) yet; "
            "steps hold until the candidate's do",
        )
    return None


def _get(result: Any, key: str) -> Any:
    return result.get(key) if isinstance(result, Mapping) else getattr(result, key, None)


def lacks_data(result: Any, criterion: Criterion | None = None) -> str | None:
    """Why an overall result was judged on no data, or None when it has some.

    A comparison with production (margin, max_ratio, drift, agreement) needs data in both
    arms; an absolute limit (`max`/`min` on the candidate's own value) or an error-class
    tripwire needs the candidate's only. `result` is a CriterionResult or its dict.
    """
    n_c = int(_get(result, "n_candidate") or 0)
    n_b = int(_get(result, "n_baseline") or 0)
    compared = True
    if criterion is not None:
        fam = criterion.spec.family
        relative = criterion.margin is not None or criterion.max_ratio is not None
        compared = relative or fam == "drift"
    what = source_of(criterion) if criterion is not None else "data"
    if n_c == 0:
        return f"no candidate data yet (from {what})"
    if compared and n_b == 0:
        return f"no production data to compare with yet (from {what})"
    return None
