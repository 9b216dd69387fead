"""The one sentence a person reads for each result (pure formatting).

e.g. "canary accuracy 0.871 vs 0.903 (−3.2 pts, 95% CS −4.1 to −2.3) is below the allowed
−1.0 pts: FAIL". Proportions are shown as fractions and their differences in points.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from coalmine.analysis.sequential import Verdict

if TYPE_CHECKING:
    from coalmine.analysis.criteria import Criterion
    from coalmine.analysis.judge import Evidence

MINUS = "\u2212"


def _signed(text: str) -> str:
    return text.replace("-", MINUS)


def level(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


def value(x: float, unit: str) -> str:
    if not math.isfinite(x):
        return "∞" if x == math.inf else ("n/a" if x != x else _signed("-∞"))
    if unit == "pts":
        return _signed(f"{x:.3f}")
    if unit == "ms":
        return _signed(f"{x:.0f} ms" if abs(x) >= 100 else f"{x:.1f} ms")
    if unit == "%":
        return _signed(f"{x:.1f}%")
    if unit == "MB":
        return _signed(f"{x:.0f} MB")
    return _signed(f"{x:.4f}" if abs(x) < 1 else f"{x:.4g}")


def delta(x: float, unit: str, *, signed: bool = True) -> str:
    if not math.isfinite(x):
        return value(x, unit)
    fmt = "+.1f" if signed else ".1f"
    if unit == "pts":
        return _signed(f"{100 * x:{fmt}} pts")
    if unit == "ms":
        return _signed(f"{x:{fmt}} ms")
    if unit in ("%", "MB"):
        return _signed(f"{x:{fmt}}{'%' if unit == '%' else ' MB'}")
    return _signed(f"{x:+.3g}" if signed else f"{x:.3g}")


def bound(x: float, unit: str) -> str:
    """A CS bound: the number only, in the units of the difference beside it."""
    if not math.isfinite(x):
        return value(x, unit)
    return _signed(f"{100 * x:.1f}" if unit == "pts" else f"{x:.3g}")


def ratio(x: float) -> str:
    return _signed(f"{x:.2f}×") if math.isfinite(x) else value(x, "")


def _relation(verdict: Verdict, higher_is_better: bool) -> str:
    if verdict is Verdict.FAIL:
        return "is below" if higher_is_better else "is above"
    if verdict is Verdict.PASS:
        return "is within"
    return "cannot yet be told from"


def _tail(verdict: Verdict, n_c: int, n_b: int) -> str:
    if verdict is Verdict.INCONCLUSIVE:
        return f": INCONCLUSIVE ({n_c:,} vs {n_b:,} samples so far)"
    return f": {verdict.value}"


def sentence(
    c: Criterion, ev: Evidence, verdict: Verdict, kind: str, estimate: float, lower: float,
    upper: float, threshold: float, cand: float, base: float, alpha: float, n_c: int, n_b: int,
) -> str:  # fmt: skip
    unit = c.spec.unit
    arm = "shadow" if ev.mode == "shadow" else "canary"
    where = f"in slice {ev.slice}, " if ev.slice else ""
    cs = f"{level(alpha)} CS"
    fam = c.spec.family
    higher = c.higher_is_better
    if kind == "floor":
        return floor_sentence(c, ev, verdict, estimate, lower, upper, threshold, cand, base,
                              alpha, n_c)  # fmt: skip
    if verdict is Verdict.INCONCLUSIVE and (n_c == 0 or n_b == 0):
        what = "labelled examples" if c.spec.needs_labels else "samples"
        side = "candidate" if n_c == 0 else "production"
        return f"{where}{arm} {c.metric}: no {side} {what} yet: INCONCLUSIVE"
    if fam == "drift":
        from coalmine.analysis import drift

        what = "PSI" if c.metric == "psi" else "Jensen–Shannon divergence"
        note = f" ({drift.level(estimate)})" if c.metric == "psi" and estimate == estimate else ""
        # Drift is a point estimate compared with a limit, not a confidence sequence: say so
        # wherever the sentence is read (dashboard, report, summary, rollout events).
        return (
            f"{where}{what} of {arm} vs production predictions {value(estimate, '')}{note} "
            f"{_relation(verdict, False)} the allowed {value(threshold, '')}"
            f"{_tail(verdict, n_c, n_b)} (descriptive: a point estimate against the limit, "
            f"not an anytime-valid test)"
        )
    if fam == "agreement":
        what = (
            "agreement with production"
            if c.metric == "agreement"
            else "mean |difference| from production"
        )
        lim = "minimum" if c.min is not None else "maximum"
        return (
            f"{where}{arm} {what} {value(estimate, unit)} ({cs} {value(lower, unit)} to "
            f"{value(upper, unit)}) {_relation(verdict, c.min is not None)} the allowed {lim} "
            f"{value(threshold, unit)}{_tail(verdict, n_c, n_b)}"
        )
    if kind == "ratio":
        return (
            f"{where}{arm} {c.metric} {value(cand, unit)} vs {value(base, unit)} (ratio "
            f"{ratio(estimate)}, {cs} {ratio(lower)} to {ratio(upper)}) "
            f"{_relation(verdict, False)} the allowed {ratio(threshold)}"
            f"{_tail(verdict, n_c, n_b)}"
        )
    if kind == "value":
        lim = "maximum" if c.max is not None else "minimum"
        return (
            f"{where}{arm} {c.metric} {value(estimate, unit)} ({cs} {value(lower, unit)} to "
            f"{value(upper, unit)}) {_relation(verdict, c.max is None)} the allowed {lim} "
            f"{value(threshold, unit)}{_tail(verdict, n_c, n_b)}"
        )
    return (
        f"{where}{arm} {c.metric} {value(cand, unit)} vs {value(base, unit)} "
        f"({delta(estimate, unit)}, {cs} {bound(lower, unit)} to {bound(upper, unit)}) "
        f"{_relation(verdict, higher)} the allowed "
        f"{delta(threshold, unit)}{_tail(verdict, n_c, n_b)}"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else value(x, "")


def _signed_bound(x: float, unit: str) -> str:
    if not math.isfinite(x):
        return value(x, unit)
    return _signed(f"{100 * x:+.1f}" if unit == "pts" else f"{x:+.3g}")


def floor_sentence(
    c: Criterion, ev: Evidence, verdict: Verdict, estimate: float, lower: float, upper: float,
    threshold: float, cand: float, base: float, alpha: float, n: int,
) -> str:  # fmt: skip
    """Agreement against the noise floor, e.g. "shadow agreement with production 91.2% vs
    the baseline's 92.0% (noise floor), −0.8 pts (95% CS −2.1 to +0.5), allowed −1.0 pts"."""
    where = f"in slice {ev.slice}, " if ev.slice else ""
    arm = "shadow" if ev.mode == "shadow" else "canary"
    agreement = c.metric == "agreement"
    what = "agreement with production" if agreement else "mean |difference| from production"
    if n == 0:
        return (
            f"{where}{arm} {c.metric} margin needs a baseline (noise floor): no request "
            f"answered by production, {arm} and baseline yet: INCONCLUSIVE"
        )
    unit = c.spec.unit
    show = _pct if agreement else (lambda x: value(x, unit))
    tail = f": INCONCLUSIVE ({n:,} requests with a baseline so far)"
    return (
        f"{where}{arm} {what} {show(cand)} vs the baseline's {show(base)} (noise floor), "
        f"{delta(estimate, unit)} ({level(alpha)} CS {_signed_bound(lower, unit)} to "
        f"{_signed_bound(upper, unit)}), allowed {delta(threshold, unit)}"
        f"{tail if verdict is Verdict.INCONCLUSIVE else f': {verdict.value}'}"
    )


def tripwire_sentence(c: Criterion, ev: Evidence, hits: dict[str, int], n_c: int) -> str:
    arm = "shadow" if ev.mode == "shadow" else "canary"
    where = f"in slice {ev.slice}, " if ev.slice else ""
    if hits:
        seen = ", ".join(f"{v:,} × {k}" for k, v in sorted(hits.items()))
        return f"{where}{arm} hit critical error class(es): {seen}: FAIL"
    classes = ", ".join(c.error_classes)
    verdict = "PASS" if n_c else "INCONCLUSIVE"
    return f"{where}no critical error ({classes}) in {n_c:,} {arm} calls: {verdict}"
