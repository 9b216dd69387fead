"""Anytime-valid judgement of a candidate model against production, overall and per slice.

Usable without the gateway: feed batches of outcomes per arm, ask for the judgement. The
answer stays correct however often you ask (confidence sequences, not repeated t-tests).

>>> from coalmine.analysis import Analysis, Criterion
>>> a = Analysis(
...     criteria=[
...         Criterion(metric="accuracy", margin=0.01),      # cand ≥ prod − 1 point
...         Criterion(metric="error_rate", margin=0.005),   # cand ≤ prod + 0.5 points
...         Criterion(metric="latency_p95", max_ratio=1.2),
...     ],
...     task="classification",
...     max_slices=0,                                        # no per-slice judgement here
... )
>>> a.add_batch("candidate", predictions=[1, 0, 1, 1], labels=[1, 0, 0, 1],
...             latency_ms=[12.0, 15.5, 11.2, 13.0], errors=[None, None, None, None])
>>> a.add_batch("baseline", predictions=[1, 0, 0, 1], labels=[1, 0, 0, 1],
...             latency_ms=[10.0, 14.0, 12.5, 11.0], errors=[None, None, None, None])
>>> j = a.judge()
>>> j.verdict.value                                          # far too few samples to decide
'INCONCLUSIVE'
>>> print(j.summary())  # doctest: +ELLIPSIS
INCONCLUSIVE: 4 candidate and 4 baseline calls judged
  INCONCLUSIVE canary accuracy 0.750 vs 1.000 ...

Shadow (both versions answered the same requests) is fed with `add_pairs(candidate=...,
baseline=..., labels=...)`; every request then counts for both. With a fresh instance of
production's version answering the same requests (`Analysis(..., noise_floor=True)` and
`add_pairs(..., noise_baseline=...)`), `Criterion(metric="agreement", margin=0.01)` judges the
candidate's agreement with production against production's agreement with itself.
`coalmine analyze` runs the same over an exported prediction log, and
`coalmine.analysis.engine.Evaluator` over the live log for the rollout controller.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coalmine.analysis.analysis import Analysis
    from coalmine.analysis.criteria import (
        CriteriaFile,
        Criterion,
        default_criteria,
        load_criteria,
    )
    from coalmine.analysis.judge import judge
    from coalmine.analysis.result import CriterionResult, Judgement
    from coalmine.analysis.sequential import Verdict

__all__ = [
    "Analysis",
    "CriteriaFile",
    "Criterion",
    "CriterionResult",
    "Judgement",
    "Verdict",
    "default_criteria",
    "judge",
    "load_criteria",
]


# The public names load on first use: they pull in numpy and scipy (~1 s), and importing any
# submodule (e.g. `coalmine.analysis.cli` for `coalmine --help`) runs this file first.
_SOURCES = {
    "coalmine.analysis.analysis": ("Analysis",),
    "coalmine.analysis.criteria": (
        "CriteriaFile",
        "Criterion",
        "default_criteria",
        "load_criteria",
    ),
    "coalmine.analysis.judge": ("judge",),
    "coalmine.analysis.result": ("CriterionResult", "Judgement"),
    "coalmine.analysis.sequential": ("Verdict",),
}


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module, names in _SOURCES.items():  # all at once, as the eager imports did
        loaded = importlib.import_module(module)
        for n in names:
            globals()[n] = getattr(loaded, n)
    return globals()[name]


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # importing the submodule `judge` would bind it over the public function `judge`
        if name == "judge" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
