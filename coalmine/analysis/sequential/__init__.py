"""Anytime-valid statistics kernel: pure numpy/scipy, no I/O.

Every object here is O(1) (or fixed-size) state that can be merged and persisted with
`to_dict()`/`from_dict()`; every function is a pure computation on that state. The
constructions and their references are in the module docstrings; `simulation` holds the
vectorised simulators the tests and benchmarks use.
"""

from coalmine.analysis.sequential._bernstein import BernsteinState, bernstein_cs
from coalmine.analysis.sequential._counts import ErrorCountEValue
from coalmine.analysis.sequential._decision import (
    Interval,
    Verdict,
    decide_higher_better,
    decide_lower_better,
)
from coalmine.analysis.sequential._drift import (
    JS_SIGNIFICANT,
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    jensen_shannon,
    psi,
    psi_level,
)
from coalmine.analysis.sequential._mixture import (
    DEFAULT_DESIGN_EFFECTIVE_N,
    default_rho,
    mean_difference_cs,
    mixture_radius,
    mixture_radius_array,
    paired_mean_cs,
    prior_variance_floor,
    stratified_difference_cs,
    two_sample_variance,
)
from coalmine.analysis.sequential._moments import Moments
from coalmine.analysis.sequential._multiplicity import bonferroni_alpha, e_bh, e_to_p, holm
from coalmine.analysis.sequential._planning import (
    anytime_sample_size,
    fixed_horizon_sample_size,
)
from coalmine.analysis.sequential._quantiles import (
    LogHistogram,
    quantile_cs,
    quantile_cs_radius,
    quantile_min_samples,
    quantile_ratio_verdict,
)
from coalmine.analysis.sequential._score import (
    mean_cs,
    mean_z,
    proportion_cs,
    proportion_difference_cs,
    proportion_difference_z,
    proportion_ratio_cs,
    proportion_ratio_z,
    proportion_z,
    scaled_difference_cs,
    scaled_difference_z,
    shifted_difference_cs,
)

__all__ = [
    "DEFAULT_DESIGN_EFFECTIVE_N",
    "JS_SIGNIFICANT",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "BernsteinState",
    "ErrorCountEValue",
    "Interval",
    "LogHistogram",
    "Moments",
    "Verdict",
    "anytime_sample_size",
    "bernstein_cs",
    "bonferroni_alpha",
    "decide_higher_better",
    "decide_lower_better",
    "default_rho",
    "e_bh",
    "e_to_p",
    "fixed_horizon_sample_size",
    "holm",
    "jensen_shannon",
    "mean_cs",
    "mean_difference_cs",
    "mean_z",
    "mixture_radius",
    "mixture_radius_array",
    "paired_mean_cs",
    "prior_variance_floor",
    "proportion_cs",
    "proportion_difference_cs",
    "proportion_difference_z",
    "proportion_ratio_cs",
    "proportion_ratio_z",
    "proportion_z",
    "psi",
    "psi_level",
    "quantile_cs",
    "quantile_cs_radius",
    "quantile_min_samples",
    "quantile_ratio_verdict",
    "scaled_difference_cs",
    "scaled_difference_z",
    "shifted_difference_cs",
    "stratified_difference_cs",
    "two_sample_variance",
]
