"""A judge-only verdict and its JSON answer (pure).

The step rule is the controller's (rollout/machine.py `_judge_window`) without the clock
that ends a step: the tool that drives the traffic owns time (Argo's `count` and
`interval`, Flagger's `threshold` and `interval`), so Coalmine only says where the step
stands now:

    FAIL          a criterion failed (overall or in a slice): roll back
    PASS          the step's minimum duration and samples are met, every `must: pass`
                  criterion PASSed, every `must: not_fail` one has ruled out its power floor,
                  and every criterion has data
    INCONCLUSIVE  anything else: keep looking (the reason says what is missing)

The answer is flat where tools read it: `verdict` at the top, one entry per criterion
under `criteria.<name>` (verdict, confidence interval, threshold, n per arm, the floor),
so an Argo `jsonPath` such as `{$.verdict}` or `{$.criteria.accuracy.verdict}` and a
Flagger gate read the same document.
"""

from __future__ import annotations

from typing import Any, Literal

from coalmine.rollout.machine import Evidence, waiting_for

__all__ = ["Verdict", "answer", "decide", "no_candidate_answer"]

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]


def decide(
    ev: Evidence, *, elapsed: float, min_duration: float, min_samples: int
) -> tuple[Verdict, str]:
    """(verdict, reason) for the current step, from the same Evidence the controller reads."""
    if ev.failing:
        return "FAIL", "; ".join(ev.failing)
    if ev.error is not None:
        return "INCONCLUSIVE", f"the analysis cannot judge yet: {ev.error}"
    waiting = waiting_for(ev, elapsed, min_duration=min_duration, min_samples=min_samples)
    if waiting:
        return "INCONCLUSIVE", "waiting (" + ", ".join(waiting) + ")"
    parts = [f"{ev.must_pass} must-pass PASS"] if ev.must_pass else []
    parts.extend(ev.ruled_out)
    rest = ev.must_not_fail - len(ev.ruled_out)
    if rest > 0:
        parts.append(f"{rest} more not failing")
    return "PASS", f"after {elapsed:.0f}s and {ev.samples} samples: " + "; ".join(parts)


def _criterion(result: dict[str, Any], floor: float | None) -> dict[str, Any]:
    keys = ("verdict", "metric", "must", "estimate", "lower", "upper", "threshold",
            "n_candidate", "n_baseline", "candidate_value", "baseline_value", "critical",
            "sentence")  # fmt: skip
    out = {k: result.get(k) for k in keys}
    out["rule_out"] = floor
    return out


def answer(
    *,
    head: dict[str, Any],
    step: dict[str, Any],
    verdict: Verdict,
    reason: str,
    ev: Evidence,
) -> dict[str, Any]:
    """The JSON document the endpoints return; `head` names the model and versions."""
    data: dict[str, Any] = dict(ev.judgement or {})
    floors: dict[str, float] = data.get("rule_out") or {}
    results: list[dict[str, Any]] = data.get("results") or []
    criteria = {
        r["name"]: _criterion(r, floors.get(r["name"])) for r in results if r.get("slice") is None
    }
    slices = [
        {**_criterion(r, None), "name": r["name"], "slice": r["slice"]}
        for r in results
        if r.get("slice") is not None and r.get("verdict") == "FAIL"
    ]
    return {
        **head,
        "verdict": verdict,
        "reason": reason,
        "step": {**step, "samples": ev.samples},
        "n_candidate": int(data.get("n_candidate") or 0),
        "n_baseline": int(data.get("n_baseline") or 0),
        "criteria": criteria,
        "failing_slices": slices,
        "failing": list(ev.failing),
        "undecided": list(ev.unproven),
        "no_data": list(ev.no_data),
        "ruled_out": list(ev.ruled_out),
        "analysis_verdict": data.get("verdict"),
        "notes": list(data.get("notes") or []),
        "evaluated_at": data.get("evaluated_at"),
    }


def _undecided(c: Any) -> dict[str, Any]:
    return {"verdict": "INCONCLUSIVE", "metric": c.metric, "must": c.must,
            "n_candidate": 0, "n_baseline": 0}  # fmt: skip


def no_candidate_answer(
    *, head: dict[str, Any], step: dict[str, Any], criteria: list[Any], now: float
) -> dict[str, Any]:
    """Nothing logged for the candidate yet: every criterion is undecided, on no data."""
    reason = (
        f"waiting (no calls of {head['candidate']!r} logged for model {head['model']!r} "
        "yet: is its traffic reaching Coalmine's log?)"
    )
    return {
        **head,
        "verdict": "INCONCLUSIVE",
        "reason": reason,
        "step": {**step, "samples": 0},
        "n_candidate": 0,
        "n_baseline": 0,
        "criteria": {c.name: _undecided(c) for c in criteria},
        "failing_slices": [],
        "failing": [],
        "undecided": [],
        "no_data": [f"{c.name}: no candidate data yet" for c in criteria],
        "ruled_out": [],
        "analysis_verdict": None,
        "notes": [],
        "evaluated_at": now,
    }
