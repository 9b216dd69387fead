"""Anytime-valid statistics kernel: pure numpy/scipy, no I/O.

Every object here is O(1) (or fixed-size) state that can be merged and persisted with
`to_dict()`/`from_dict()`; every function is a pure computation on that state. The
constructions and their references are in the module docstrings.
"""

from coalmine.analysis.sequential._decision import (
    Interval,
    Verdict,
    decide_higher_better,
    decide_lower_better,
)
from coalmine.analysis.sequential._mixture import (
    DEFAULT_DESIGN_EFFECTIVE_N,
    default_rho,
    mean_difference_cs,
    mixture_radius,
    mixture_radius_array,
    paired_mean_cs,
    stratified_difference_cs,
)
from coalmine.analysis.sequential._moments import Moments

__all__ = [
    "DEFAULT_DESIGN_EFFECTIVE_N",
    "Interval",
    "Moments",
    "Verdict",
    "decide_higher_better",
    "decide_lower_better",
    "default_rho",
    "mean_difference_cs",
    "mixture_radius",
    "mixture_radius_array",
    "paired_mean_cs",
    "stratified_difference_cs",
]
