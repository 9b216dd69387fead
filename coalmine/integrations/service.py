"""Judge-only evaluations over the prediction log (I/O): no Coalmine rollout behind them.

Which rows are whose. In canary mode the traffic layer is not Coalmine's gateway, so a row's
role says little (a collector may log every call as "stable"): every served call of the
candidate version (role canary or stable) is the candidate's, every served call of the
baseline version is production's; mirrored copies (shadow, baseline, paired) are left out.
In shadow mode the roles are the gateway's: the candidate's "shadow" rows against the
baseline's "stable" rows of the same requests.

Where the window starts. At the first call of the candidate logged at or after the query's
`not_before` (Argo: versions named by pod-template hash are new with every revision, so
that is the revision's first call; Flagger: `not_before` is when Coalmine first saw the
canary's checksum). Both arms are read from there, so production is compared over the same
hours as the candidate.

The split. Canary rows judged at an unknown split pool a ramp, which the analysis refuses
(Simpson) once the candidate's share of the rows moves: a row logged with its canary weight
(`canary_weight_bp`) keeps it; one logged without gets the weight the query states (Argo
passes each step's weight), never a defaulted one. A row read late, after the weight
changed, is then counted at the new weight: rows logged between a step's last look and the
next step's first look, a few seconds' worth at Argo's usual intervals. A query that states
no weight over a ramp gets INCONCLUSIVE with the analysis's reason.

Sessions. One incremental `Evaluator` per distinct question (model, versions, mode, spec,
window start), kept in memory (the most recent 64), each behind its own lock. A restart
re-reads the log from the window start and reaches the same answer, only slower.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from sqlalchemy import Engine, func, select

from coalmine.analysis.engine import Evaluator
from coalmine.analysis.metrics import Obs
from coalmine.config import ConfigError
from coalmine.integrations.decision import answer, decide, no_candidate_answer
from coalmine.integrations.evidence import evidence_of
from coalmine.integrations.query import JudgeQuery
from coalmine.rollout.floor import schedule
from coalmine.rollout.judge import build_criteria, guard_rail_paths
from coalmine.rollout.machine import Evidence
from coalmine.store.schema import predictions

__all__ = ["JudgeService", "UnknownModel"]

_SERVED = ("canary", "stable")
_MAX_SESSIONS = 64


class UnknownModel(LookupError):
    """The model is not in Coalmine's configuration (the API answers 404)."""


class _ExternalEvaluator(Evaluator):
    """The engine's Evaluator with judge-only arms (module docstring) and the query's split
    for rows logged without one."""

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.step_bp = 0
        if self.mode == "canary":
            # by version: whatever role the collector gave a served call
            self.arms = {(v, r): arm for v, arm in ((self.candidate, "candidate"),
                         (self.baseline, "baseline")) for r in _SERVED}  # fmt: skip
            self.pair_arms = self.arms

    # an instance method over the parent's staticmethod: Evaluator calls it as self._obs
    def _obs(  # type: ignore[override]
        self,
        row: Mapping[str, Any],
        prefix: str = "",
        label: Any = None,
        outcomes: Any = None,
        has_label: bool = False,
    ) -> Obs:
        obs = Evaluator._obs(row, prefix, label, outcomes, has_label)
        if self.mode == "canary" and obs.step == 0 and self.step_bp:
            obs = replace(obs, step=self.step_bp)
        return obs


@dataclass
class _Asked:
    """A question a tool asked, its last answer and when a tool last asked it."""

    query: JudgeQuery
    answer: dict[str, Any]
    asked_at: float


@dataclass
class _Session:
    query: JudgeQuery
    since: float
    evaluator: _ExternalEvaluator
    criteria: list[Any]
    floors: dict[str, tuple[float | None, ...]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    # weight -> when the step at that weight started: the window's start for the first
    # weight asked, else the first time a query asked at it (Argo starts a step's analysis
    # when it sets the weight)
    step_started: dict[float | None, float] = field(default_factory=dict)
    # the step's samples, counted incrementally: candidate calls read so far, and how many
    # had been read when each step started
    n_read: int = 0
    step_base: dict[float | None, int] = field(default_factory=dict)


class JudgeService:
    """Answers judge-only queries; `models()` lists the configured models (store routes)."""

    def __init__(
        self,
        engine: Engine,
        *,
        models: Callable[[], set[str]],
        tasks: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.models = models
        self.tasks = dict(tasks or {})
        self.clock = clock
        self._sessions: OrderedDict[tuple[Any, ...], _Session] = OrderedDict()
        # every question asked lately, with or without data yet (the metrics collector's)
        self._asked: OrderedDict[tuple[Any, ...], _Asked] = OrderedDict()
        self._lock = threading.Lock()

    # -- the window ---------------------------------------------------------------------------
    def _first_call(self, q: JudgeQuery) -> float | None:
        roles = ("shadow",) if q.mode == "shadow" else _SERVED
        stmt = select(func.min(predictions.c.ts)).where(
            predictions.c.model == q.model,
            predictions.c.version == q.candidate,
            predictions.c.role.in_(roles),
        )
        if q.not_before is not None:
            stmt = stmt.where(predictions.c.ts >= q.not_before)
        with self.engine.connect() as conn:
            ts = conn.execute(stmt).scalar()
        return None if ts is None else float(ts)

    def _task(self, model: str) -> str:
        return self.tasks.get(model, "classification")

    def criteria(self, q: JudgeQuery) -> list[Any]:
        """The built criteria of the query's mode (ConfigError naming the request's field)."""
        # aggregates are the traffic layer's own Prometheus provider's job here; dropping
        # them silently would judge less than the spec says
        rails = guard_rail_paths(q.spec, q.mode)
        if rails:
            why = ("PromQL criteria (source:) are judged in Coalmine's own rollouts only; "
                   "use Argo Rollouts' or Flagger's Prometheus provider for them")  # fmt: skip
            raise ConfigError(f"{q.where}spec", [(f"{q.where}spec.{p}", why) for p in rails])
        try:
            return build_criteria(q.spec, q.mode, self._task(q.model))
        except ConfigError as exc:
            errors = [(f"{q.where}spec.{path}", reason) for path, reason in exc.errors]
            raise ConfigError(f"{q.where}spec", errors) from None

    def _session(self, q: JudgeQuery) -> _Session | None:
        key = q.session_key()
        with self._lock:
            found = self._sessions.get(key)
            if found is not None:
                self._sessions.move_to_end(key)
                return found
        since = self._first_call(q)
        if since is None:
            return None
        criteria = self.criteria(q)
        evaluator = _ExternalEvaluator(
            self.engine,
            model=q.model,
            candidate=q.candidate,
            baseline=q.baseline,
            criteria=criteria,
            mode=q.mode,
            alpha=q.spec.alpha,
            since_ts=since,
            task=cast(Literal["classification", "regression"], self._task(q.model)),
        )
        floors = schedule(q.spec, criteria) if q.mode == "canary" else {}
        session = _Session(q, since, evaluator, criteria, floors)
        with self._lock:
            session = self._sessions.setdefault(key, session)
            self._sessions.move_to_end(key)
            while len(self._sessions) > _MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    # -- one judgement ------------------------------------------------------------------------
    def judge(self, q: JudgeQuery, *, asked: bool = True) -> dict[str, Any]:
        """The answer for `q` now (raises UnknownModel, ConfigError); `asked=False` for a
        scrape refreshing it (it does not keep a question alive)."""
        out = self._judge(q)
        key = q.session_key()
        with self._lock:
            before = self._asked.pop(key, None)
            since = self.clock() if asked or before is None else before.asked_at
            self._asked[key] = _Asked(q, out, since)
            while len(self._asked) > _MAX_SESSIONS:
                self._asked.popitem(last=False)
        return out

    def _judge(self, q: JudgeQuery) -> dict[str, Any]:
        if q.model not in self.models():
            raise UnknownModel(f"unknown model {q.model!r}")
        criteria = self.criteria(q)  # ConfigError before any reading
        now = self.clock()
        head = {"model": q.model, "candidate": q.candidate, "baseline": q.baseline,
                "mode": q.mode}  # fmt: skip
        window = q.spec.shadow if q.mode == "shadow" else q.spec.canary
        if q.mode == "canary":
            st = q.spec.canary.steps[q.step_index]
            min_duration = q.spec.canary.step_min_duration(st)
            min_samples = q.spec.canary.step_min_samples(st)
        else:
            min_duration, min_samples = window.min_duration, window.min_samples
        step: dict[str, Any] = {"weight": q.weight, "min_duration_s": min_duration,
                                "min_samples": min_samples}  # fmt: skip
        session = self._session(q)
        if session is None:
            step.update(since=None, elapsed_s=0.0)
            return no_candidate_answer(head=head, step=step, criteria=criteria, now=now)
        with session.lock:
            first = not session.step_started
            started = session.step_started.setdefault(q.weight, session.since if first else now)
            base = session.step_base.setdefault(q.weight, 0 if first else session.n_read)
            ev = self._evidence(session, q, base)
            elapsed = max(0.0, now - started)
            step.update(since=session.since, started=started, elapsed_s=round(elapsed, 3))
            verdict, reason = decide(
                ev, elapsed=elapsed, min_duration=min_duration, min_samples=min_samples
            )
            return answer(head=head, step=step, verdict=verdict, reason=reason, ev=ev)

    def _evidence(self, s: _Session, q: JudgeQuery, base: int) -> Evidence:
        """`base`: candidate calls read before the step started (samples = the rest)."""
        evaluator = s.evaluator
        evaluator.step_bp = round((q.stated_weight or 0) * 100) if q.mode == "canary" else 0
        floors: dict[str, float] = {}
        for name, steps in s.floors.items():
            x = steps[q.step_index] if q.step_index < len(steps) else None
            if x is not None:
                floors[name] = x
        try:
            judgement = evaluator.evaluate()
        except ValueError as exc:
            # the analysis refuses what it cannot judge (e.g. a ramp pooled without its
            # split): say so and keep looking, never a 500
            return Evidence(error=str(exc)[:500], samples=s.n_read - base)
        s.n_read = judgement.n_candidate
        samples = s.n_read - base
        return evidence_of(judgement, s.criteria, mode=q.mode, floors=floors, samples=samples)

    # -- for the metrics collector ------------------------------------------------------------
    def recent(self, *, asked_within: float, refresh_after: float) -> list[dict[str, Any]]:
        """The last answer of every question asked within `asked_within` seconds, judged
        again when older than `refresh_after` (a scrape between two tool calls)."""
        now = self.clock()
        with self._lock:
            asked = [a for a in self._asked.values() if now - a.asked_at <= asked_within]
        out = []
        for a in asked:
            last = a.answer
            if now - float(last.get("evaluated_at") or 0) > refresh_after:
                with contextlib.suppress(Exception):  # a scrape never fails for one question
                    last = self.judge(a.query, asked=False)
            out.append(last)
        return out
