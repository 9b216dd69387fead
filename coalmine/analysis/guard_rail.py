"""How a PromQL criterion is judged: thresholds over windows, a count-limited FAIL (pure).

A Prometheus aggregate (a rate, a peak, a quantile of a histogram) is not a sample of
independent requests: consecutive values overlap and are autocorrelated, and their noise is
unknown, so no confidence sequence applies and a PASS would be a claim without an error
rate. Such a criterion is a guard rail — the sequential tests keep judging per-request data
from the prediction log — and this is the whole rule:

- every `window` seconds (from the phase's first evaluation) the query is run once for the
  candidate and, for `max_ratio`, once for the stable version, at the same moment;
- a window BREACHES when the candidate's value is above `max` or below `min`, or above
  `max_ratio` × the stable version's value;
- it has NO DATA when a needed value is missing: an empty vector, NaN (e.g. 0/0 with no
  requests), or a query that failed. The stable version's value is the latest it gave;
- at 100% the stable version serves no request: it is not read at all (`reads_stable`), and
  the windows are judged against its latest reading from an earlier step. A window read
  after the switch still covers the stable's last few requests before it, and a value of a
  handful of requests is noise (CPU per request even reads 0 when the process's CPU counter,
  10 ms a tick, did not move): a good candidate was rolled back on that 0;
- `failures` consecutive breaching windows (default 2) FAIL the criterion, which rolls the
  rollout back (a window with no data neither breaks nor extends the run);
- a step is HELD while the latest window breached (fewer than `failures` in a row) and
  while the latest window had no data (no data is never "nothing failed",
  analysis/nodata.py); otherwise the criterion holds nothing back;
- it never PASSes: `must: pass` is refused, so it can only hold or roll back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from coalmine.analysis.promql import PromQLCriterion, promql_duration
from coalmine.analysis.result import CriterionResult
from coalmine.analysis.sequential import Verdict

__all__ = ["GuardRail", "Status", "Window", "breaches", "reads_stable"]

Status = Literal["fail", "breaching", "no_data", "ok"]


@dataclass(frozen=True, slots=True)
class Window:
    """One window's readings (None: no data) and why a reading is missing, if it is."""

    candidate: float | None
    stable: float | None
    error: str | None = None


def _value(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# the canary weight (basis points) at which the stable version serves nothing
_ALL_TRAFFIC_BP = 10_000


def reads_stable(criterion: PromQLCriterion, canary_weight_bp: int) -> bool:
    """Whether a window reads the stable version's value: for a ratio, while it serves part
    of the traffic (module doc)."""
    return criterion.max_ratio is not None and canary_weight_bp < _ALL_TRAFFIC_BP


def breaches(criterion: PromQLCriterion, window: Window) -> bool | None:
    """Whether `window` breaches the criterion's thresholds; None when it has no data."""
    c = _value(window.candidate)
    if c is None:
        return None
    if criterion.max is not None and c > criterion.max:
        return True
    if criterion.min is not None and c < criterion.min:
        return True
    if criterion.max_ratio is not None:
        s = _value(window.stable)
        if s is None:
            return None
        return c > criterion.max_ratio * s
    return False


class GuardRail:
    """One PromQL criterion's windows during one phase of a rollout."""

    def __init__(self, criterion: PromQLCriterion, opened_at: float) -> None:
        self.criterion = criterion
        self.opened_at = opened_at
        self.last_at: float | None = None
        self.windows = 0  # windows with the candidate's value
        self.stable_windows = 0  # windows with the stable version's value
        self.streak = 0  # consecutive breaching windows (no-data windows skipped)
        self.breached = 0  # breaching windows in all
        self.last: Window | None = None
        self.last_breach: bool | None = None

    def due(self, now: float) -> bool:
        start = self.opened_at if self.last_at is None else self.last_at
        return now - start >= self.criterion.window

    def observe(self, now: float, window: Window) -> None:
        self.last_at = now
        if _value(window.candidate) is not None:
            self.windows += 1
        if _value(window.stable) is not None:
            self.stable_windows += 1
        elif self.last is not None and _value(self.last.stable) is not None:
            window = Window(window.candidate, self.last.stable, window.error)  # latest known
        self.last = window
        breach = breaches(self.criterion, window)
        self.last_breach = breach
        if breach is True:
            self.streak += 1
            self.breached += 1
        elif breach is False:
            self.streak = 0

    def status(self) -> Status:
        if self.streak >= self.criterion.failures:
            return "fail"
        if self.last_breach is None:
            return "no_data"
        return "breaching" if self.last_breach else "ok"

    def _estimate(self) -> tuple[float, float, float]:
        """(estimate, candidate value, stable value) of the latest window."""
        w = self.last or Window(None, None)
        c = _value(w.candidate)
        s = _value(w.stable)
        cand = math.nan if c is None else c
        stab = math.nan if s is None else s
        if self.criterion.max_ratio is None:
            return cand, cand, stab
        if c is None or s is None:
            return math.nan, cand, stab
        ratio = c / s if s > 0 else (math.inf if c > 0 else 1.0)
        return ratio, cand, stab

    def _threshold(self) -> float:
        k = self.criterion
        for value in (k.max_ratio, k.max, k.min):
            if value is not None:
                return float(value)
        return math.nan

    def sentence(self) -> str:
        k = self.criterion
        status = self.status()
        what = f"{k.name} (PromQL, {k.source}, {promql_duration(k.window)} windows)"
        if self.last is None:
            return f"{what}: no window yet: holding until the first one"
        estimate, cand, stab = self._estimate()
        unit = f" {k.unit}" if k.unit else ""
        if status == "no_data":
            why = self.last.error or "the query returned no data (an empty vector or NaN)"
            return f"{what}: no data in the latest window ({why}): holding"
        limits = []
        if k.max_ratio is not None:
            limits.append(
                f"candidate {cand:.4g} vs stable {stab:.4g}{unit}, ratio {estimate:.3g} "
                f"(max_ratio {k.max_ratio:g})"
            )
        else:
            limits.append(f"candidate {cand:.4g}{unit}")
        if k.max is not None:
            limits.append(f"max {k.max:g}")
        if k.min is not None:
            limits.append(f"min {k.min:g}")
        shown = ", ".join(limits)
        if status == "fail":
            return (
                f"{what}: {shown}: breached in {self.streak} consecutive windows "
                f"(fails at {k.failures})"
            )
        if status == "breaching":
            return (
                f"{what}: {shown}: breached in the latest {self.streak} window(s); holding "
                f"(fails at {k.failures} in a row)"
            )
        return f"{what}: {shown}: within limits in the latest window ({self.windows} judged)"

    def result(self) -> CriterionResult:
        estimate, cand, stab = self._estimate()
        verdict = Verdict.FAIL if self.status() == "fail" else Verdict.INCONCLUSIVE
        return CriterionResult(
            name=self.criterion.name,
            metric=self.criterion.metric,
            slice=None,
            verdict=verdict,
            estimate=estimate,
            lower=estimate,
            upper=estimate,
            threshold=self._threshold(),
            n_candidate=self.windows,
            n_baseline=self.stable_windows,
            sentence=self.sentence(),
            critical=self.criterion.critical,
            must="not_fail",
            candidate_value=cand,
            baseline_value=stab,
        )
