"""How the controller asks "is the candidate good enough so far?": the Judge interface.

`Judge.evaluate(record, now)` returns `Evidence` (machine.py): which criteria FAIL, which
`must: pass` criteria are not yet PASS, which criteria have received no data at all (they
hold the step whatever their `must`: analysis/nodata.py), which `must: not_fail` canary
criteria have ruled out a regression larger than their step's floor (floor.py; those that
have not yet hold the step, as `unproven`), and how many candidate samples the step has. The
one production implementation, `EngineJudge`, runs the analysis engine's incremental
`Evaluator` (one per rollout and mode, kept across ticks so each evaluation reads only new
log rows). Tests may hand the controller another Judge; the shipped code uses this one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Protocol, cast

from pydantic import ValidationError
from sqlalchemy import Engine

from coalmine.rollout.floor import floor_check, schedule
from coalmine.rollout.machine import Evidence, Phase
from coalmine.rollout.spec import CriterionSpec, RolloutSpec
from coalmine.rollout.store import RolloutRecord, RolloutRepository

__all__ = [
    "EngineJudge",
    "Judge",
    "build_criteria",
    "build_guard_rails",
    "default_must",
    "evidence_from",
    "guard_rail_paths",
    "read_results",
]

log = logging.getLogger(__name__)

# In shadow both versions answer the same requests, so paired comparisons (agreement,
# labelled quality) are decided cheaply: those must PASS. Everything else, and everything in
# canary (unpaired, low traffic at first), is a guard rail: it must not FAIL.
_SHADOW_PASS_FAMILIES = frozenset({"agreement", "quality"})


class Judge(Protocol):
    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        """Evidence for the rollout's current phase (shadow or canary). May block (DB)."""
        ...

    def forget(self, rollout_id: int) -> None:
        """Drop any state kept for a rollout that ended."""
        ...


def default_must(metric_family: str, mode: str) -> str:
    if mode == "shadow" and metric_family in _SHADOW_PASS_FAMILIES:
        return "pass"
    return "not_fail"


def _mode(record: RolloutRecord) -> str:
    s = record.state
    phase = s.paused_phase if s.phase == Phase.PAUSED else s.phase
    return "shadow" if phase == Phase.SHADOW else "canary"


def _criterion_errors(path: str, exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, reason) for each error of one criterion: its own words, not pydantic's
    link (`Value error, ` is pydantic's prefix for a validator's message)."""
    out = []
    for item in exc.errors():
        where = ".".join([path, *(str(p) for p in item["loc"])])
        out.append((where, str(item["msg"]).removeprefix("Value error, ")))
    return out


def build_criteria(spec: RolloutSpec, mode: str, task: str = "classification") -> list[Any]:
    """The analysis engine's Criterion objects for `mode`, with `must` filled in.

    Raises coalmine.config.ConfigError (field path + reason) for an invalid criterion, so a
    bad spec is refused when the rollout starts, not at its first evaluation.
    """
    from coalmine.analysis.analysis import check_criteria
    from coalmine.analysis.criteria import Criterion, default_criteria
    from coalmine.config import ConfigError

    given: list[CriterionSpec] | None = (
        spec.shadow.criteria if mode == "shadow" else spec.canary.criteria
    )
    # in shadow a baseline's disagreement with production is the noise floor
    noise_floor = mode == "shadow" and spec.baseline is not None
    if given is None:
        base = [c for c in default_criteria(task, mode, noise_floor) if mode in c.spec.modes]
    else:
        base = []
        errors: list[tuple[str, str]] = []
        try:  # PromQL criteria (with `source:`) are judged apart, as guard rails
            rails = {c.name for c in build_guard_rails(spec, mode)}
        except ConfigError as exc:
            errors.extend(exc.errors)
            rails = set()
        for i, c in enumerate(given):
            if _is_guard_rail(c):
                continue
            try:
                fields = c.model_dump(exclude_none=True, exclude={"rule_out"})
                base.append(Criterion.model_validate(fields))
            except ValidationError as exc:
                errors.extend(_criterion_errors(f"{mode}.criteria.{i}", exc))
        clash = sorted(rails & {c.name for c in base})
        if clash:
            errors.append(
                (f"{mode}.criteria", f"duplicate criterion names {clash}: give each a name")
            )
        if errors:
            raise ConfigError("<spec>", errors)
        try:
            check_criteria(
                base, task=task, mode=mode, noise_floor=noise_floor,
                paired=mode == "canary" and spec.canary.paired,
            )  # fmt: skip
        except ValueError as exc:
            raise ConfigError("<spec>", [(f"{mode}.criteria", str(exc))]) from None
    return [
        c
        if c.must is not None
        else c.model_copy(update={"must": default_must(c.spec.family, mode)})
        for c in base
    ]


def _is_guard_rail(c: CriterionSpec) -> bool:
    return (c.model_extra or {}).get("source") is not None


def guard_rail_paths(spec: RolloutSpec, mode: str) -> list[str]:
    """Field paths of `mode`'s PromQL criteria (`source:` given), unvalidated."""
    given = spec.shadow.criteria if mode == "shadow" else spec.canary.criteria
    return [f"{mode}.criteria.{i}" for i, c in enumerate(given or []) if _is_guard_rail(c)]


def build_guard_rails(spec: RolloutSpec, mode: str) -> list[Any]:
    """The PromQL criteria (`source:` given) of `mode`, validated (analysis/promql.py).

    Raises ConfigError (field path + reason), e.g. for a source not in the config file.
    """
    from coalmine.analysis.promql import PromQLCriterion
    from coalmine.config import ConfigError

    given = spec.shadow.criteria if mode == "shadow" else spec.canary.criteria
    out, errors = [], []
    for i, c in enumerate(given or []):
        if not _is_guard_rail(c):
            continue
        try:
            fields = c.model_dump(exclude_none=True, exclude={"rule_out"})
            if c.rule_out is not None:
                raise ValueError("rule_out does not apply to a PromQL criterion (a guard rail)")
            out.append(PromQLCriterion.model_validate(fields))
        except ValidationError as exc:
            errors.extend(_criterion_errors(f"{mode}.criteria.{i}", exc))
        except ValueError as exc:
            errors.append((f"{mode}.criteria.{i}", str(exc)))
    names = [c.name for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        errors.append((f"{mode}.criteria", f"duplicate criterion names {duplicates}"))
    if errors:
        raise ConfigError("<spec>", errors)
    return out


def evidence_from(
    judgement: Any,
    data: dict[str, Any],
    must: dict[str, Any],
    failing: list[str],
    unproven: list[str],
    no_data: list[str],
    ruled_out: list[str],
    *,
    samples: int,
) -> Evidence:
    """The Evidence a step decides on, from `read_results`' sentences (pure); `data` is the
    judgement's JSON, given what holds the step now so it can be read while the step waits
    (GET .../judgement, the dashboard, the judge-only answers)."""
    data.update(must=must, no_data=list(no_data), undecided=list(unproven))
    return Evidence(
        failing=tuple(failing),
        unproven=tuple(unproven),
        no_data=tuple(no_data),
        ruled_out=tuple(ruled_out),
        samples=samples,
        must_pass=sum(1 for m in must.values() if m == "pass"),
        must_not_fail=sum(1 for m in must.values() if m == "not_fail"),
        summary=judgement.summary(),
        judgement=data,
    )


def read_results(
    judgement: Any, criteria: list[Any], floors: dict[str, float]
) -> tuple[dict[str, Any], list[str], list[str], list[str], list[str]]:
    """How a step reads a judgement (pure): (must by criterion, failing, unproven, no_data,
    ruled_out), the sentences of `Evidence`. `floors`: criterion name -> the regression the
    current canary step must rule out. Shared with the judge-only endpoints
    (coalmine/integrations/evidence.py), so a step reads the same whoever drives the traffic.
    """
    from coalmine.analysis.nodata import lacks_data

    must = {c.name: c.must for c in criteria}
    by_name = {c.name: c for c in criteria}
    failing: list[str] = []
    unproven: list[str] = []
    no_data: list[str] = []
    ruled_out: list[str] = []
    held = set(judgement.held)
    for r in judgement.results:
        verdict = str(getattr(r.verdict, "value", r.verdict)).lower()
        where = f" [slice {r.slice}]" if r.slice else ""
        if verdict == "fail":
            failing.append(f"{r.sentence}{where}")
            continue
        if r.slice:
            # a slice that looks worse than allowed holds a must-pass step (analysis.py)
            if (r.name, r.slice) in held and must.get(r.name) == "pass":
                unproven.append(f"{r.name}{where}: {r.sentence}")
            continue
        # no data is never "nothing failed": the step holds, whatever `must` says
        missing = lacks_data(r, by_name.get(r.name))
        if missing is not None:
            no_data.append(f"{r.name}: {missing}")
        elif must.get(r.name) == "pass" and verdict != "pass":
            unproven.append(f"{r.name}: {r.sentence}")
        elif r.name in floors:
            # the power floor: not_fail advances only once a large regression is excluded
            ok, sentence = floor_check(r, by_name[r.name], floors[r.name])
            (ruled_out if ok else unproven).append(sentence)
    return must, failing, unproven, no_data, ruled_out


class EngineJudge:
    """The analysis engine's judgement, reduced to Evidence for the state machine."""

    def __init__(
        self,
        engine: Engine,
        task_of: dict[str, str] | None = None,
        resources: dict[tuple[str, str], Any] | None = None,
        metric_sources: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        # source name -> its query client (analysis/sources/promql.py), for PromQL criteria
        self.metric_sources = metric_sources or {}
        self._rails: dict[tuple[int, str], list[Any]] = {}
        # (model, version) -> its resource source (analysis/sources/resources.py)
        self.resources = resources or {}
        self.repo = RolloutRepository(engine)
        self.task_of = task_of or {}
        self._evaluators: dict[tuple[int, str], tuple[Any, list[Any]]] = {}
        self._floors: dict[int, dict[str, tuple[float | None, ...]]] = {}

    def forget(self, rollout_id: int) -> None:
        for key in [k for k in self._evaluators if k[0] == rollout_id]:
            del self._evaluators[key]
        for key in [k for k in self._rails if k[0] == rollout_id]:
            del self._rails[key]
        self._floors.pop(rollout_id, None)

    def _evaluator(self, record: RolloutRecord, mode: str) -> tuple[Any, list[Any]]:
        from coalmine.analysis.engine import Evaluator

        key = (record.id, mode)
        if key not in self._evaluators:
            s = record.state
            task = self.task_of.get(s.model, "classification")
            criteria = build_criteria(s.spec, mode, task)
            evaluator = Evaluator(
                self.engine,
                model=s.model,
                candidate=s.candidate,
                baseline=s.previous_stable,
                criteria=criteria,
                mode=cast(Literal["shadow", "canary"], mode),
                alpha=s.spec.alpha,
                rollout_id=s.id,
                since_ts=s.started_at,
                task=cast(Literal["classification", "regression"], task),
                # with a baseline the canary is judged against it, like for like
                baseline_role="baseline" if s.spec.baseline is not None else "stable",
                # paired canary: quality criteria on the stable version's copies of the
                # canary's own requests
                paired=mode == "canary" and s.spec.canary.paired,
            )
            self._evaluators[key] = (evaluator, criteria)
            if mode == "canary":
                self._floors[record.id] = schedule(s.spec, criteria)
        return self._evaluators[key]

    def _floor_at(self, record: RolloutRecord, mode: str) -> dict[str, float]:
        """Criterion name -> the regression the current canary step must rule out."""
        s = record.state
        if mode != "canary" or s.canary_weight_bp <= 0:
            return {}
        out = {}
        for name, steps in self._floors.get(record.id, {}).items():
            x = steps[s.step_index] if s.step_index < len(steps) else None
            if x is not None:
                out[name] = x
        return out

    def evaluate(self, record: RolloutRecord, now: float) -> Evidence:
        mode = _mode(record)
        evaluator, criteria = self._evaluator(record, mode)
        if self.resources:
            from coalmine.analysis.sources.resources import reader

            s = record.state
            evaluator.observe_resources(reader(self.resources, s.model))
        judgement = evaluator.evaluate()
        floors = self._floor_at(record, mode)
        must, failing, unproven, no_data, ruled_out = read_results(judgement, criteria, floors)
        rail_results = self._guard_rails(record, mode, now)
        for result, status in rail_results:
            if status == "fail":
                failing.append(result.sentence)
            elif status == "no_data":
                no_data.append(f"{result.name}: {result.sentence}")
            elif status == "breaching":
                unproven.append(f"{result.name}: {result.sentence}")
            must[result.name] = "not_fail"
        samples = self.repo.candidate_samples(record.state, record.state.step_started_at)
        data = judgement.to_dict()
        data["results"] = [*data.get("results", []), *(r.to_dict() for r, _ in rail_results)]
        data["mode"] = mode
        data["rule_out"] = floors
        # each version's newest CPU/memory window: the dashboard draws them over time
        data["resources"] = evaluator.resource_windows.latest()
        return evidence_from(
            judgement, data, must, failing, unproven, no_data, ruled_out, samples=samples
        )

    def _guard_rails(self, record: RolloutRecord, mode: str, now: float) -> list[Any]:
        """(result, status) per PromQL criterion, each queried when its window is due."""
        from coalmine.analysis.guard_rail import GuardRail, Window, reads_stable
        from coalmine.analysis.promql import render
        from coalmine.analysis.sources.promql import QueryError

        key = (record.id, mode)
        if key not in self._rails:
            self._rails[key] = [
                GuardRail(c, now) for c in build_guard_rails(record.state.spec, mode)
            ]
        s = record.state
        out = []
        for rail in self._rails[key]:
            k = rail.criterion
            if rail.due(now):
                client = self.metric_sources.get(k.source)
                values: dict[str, float | None] = {}
                error = None
                # at 100% the stable's latest reading from an earlier step (guard_rail.py)
                stable = reads_stable(k, s.canary_weight_bp)
                versions = [s.candidate, *([s.previous_stable] if stable else [])]
                shared = {"model": s.model, "candidate": s.candidate, "window": k.window,
                          "stable": s.previous_stable, "rollout": s.id}  # fmt: skip
                at = time.time()  # both versions read at the same instant
                for version in versions:
                    variables = {**shared, "version": version}
                    if client is None:
                        error = f"the metric source {k.source!r} is not configured here"
                        break
                    try:
                        values[version] = client.value(render(k.template(), variables), at)
                    except QueryError as exc:
                        error = str(exc)
                        log.warning("rollout %s: %s: query failed: %s", s.id, k.name, exc)
                        break
                rail.observe(now, Window(values.get(s.candidate),
                                         values.get(s.previous_stable), error))  # fmt: skip
            out.append((rail.result(), rail.status()))
        return out
