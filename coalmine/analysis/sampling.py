"""Shares of LOGGED rows when production's (stable) rows are sampled (pure).

`logging.stable_sample_rate_during_rollouts` keeps each stable call of a canary step with
probability r, whatever the request and its outcome, and stores 1/r on the kept row
(`sample_weight`). The kept stable rows are then a uniform random subsample of production's
calls: every per-request comparison (accuracy, latency, MAE, ... the two-sample confidence
sequences) stays valid as it is, with fewer production samples. What changes is any test
that compares how MANY rows each arm has, because production's rows are thinned and the
candidate's are not:

- the error-count e-value: under H0 an error event is the candidate's with probability
  θ(κ, π) = πκ/(πκ + 1 − π) for π the candidate's share of calls; a LOGGED error event is
  the candidate's with θ(κ, π') where π' = π/(π + r(1 − π)), its share of logged calls;
- the sample-ratio guard: a logged request is the candidate's with probability π' too.

Both conditioning arguments stay exact (Bernoulli thinning of one arm, independent of
everything else), so the same e-processes are valid with π' in place of π.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LoggedRate", "logged_share"]


def logged_share(share: float, rate: float) -> float:
    """The candidate's share of logged rows when it has `share` of the calls and the rest
    are logged at `rate` (the candidate's rows all kept)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate: must be in (0, 1] (got {rate!r})")
    if rate == 1.0 or share <= 0.0 or share >= 1.0:
        return share
    return share / (share + rate * (1.0 - share))


class LoggedRate:
    """The rate at which the compared production arm was logged, per canary-weight step.

    Learnt from the rows themselves: r = rows / Σ sample_weight, exact while the rate is
    constant (one gateway configuration), the traffic-weighted rate over gateways that
    differ. A step with no production row read yet takes the last rate seen at any step
    (the configuration rarely changes within a rollout), and 1 before any.
    """

    def __init__(self) -> None:
        self._steps: dict[int, list[float]] = {}  # step -> [rows, Σ weight]
        self._last = 1.0

    def observe(self, step: int, weights: list[float]) -> None:
        if not weights:
            return
        cell = self._steps.setdefault(step, [0.0, 0.0])
        cell[0] += len(weights)
        cell[1] += math.fsum(weights)
        self._last = cell[0] / cell[1]

    def rate(self, step: int) -> float:
        cell = self._steps.get(step)
        if cell is None or cell[1] <= 0:
            return self._last
        return min(1.0, cell[0] / cell[1])

    @property
    def sampled(self) -> bool:
        """Whether any production row read stood for more than one call."""
        return any(n < w for n, w in self._steps.values())

    def calls(self, step: int | None = None) -> float:
        """Estimated production calls behind the rows read (one step, or all)."""
        cells = self._steps.values() if step is None else [self._steps.get(step, [0, 0])]
        return math.fsum(c[1] for c in cells)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": {str(k): v for k, v in self._steps.items()}, "last": self._last}

    @classmethod
    def from_dict(cls, data: Any) -> LoggedRate:
        obj = cls()
        if data:
            obj._steps = {int(k): [float(x) for x in v] for k, v in data["steps"].items()}
            obj._last = float(data["last"])
        return obj
