"""The controller's entry point: judge a candidate from the live prediction log (I/O).

`Evaluator.evaluate()` is incremental. It keeps two cursors, the last prediction id and the
last feedback id it has read, and each call reads only what is new since:

A. new prediction rows (id in (P_old, P_new]) of the two arms, each with the feedback of
   its request that is already old (f.id ≤ F_old) — feedback that arrived before the
   prediction row was logged (the gateway logs in batches);
B. new feedback rows (id in (F_old, F_new]), with the prediction rows of their requests
   with id ≤ P_new — feedback that arrives after its prediction was read, however late.

Feedback comes in any number of items per request (a label, later outcomes, a correction).
Each FIELD of it — the label, each named outcome — counts once per prediction row, with
its first value, when that value arrives (`store.feedback.first_values`): A takes the
fields whose first value has id ≤ F_old, B those whose first value has id in
(F_old, F_new]. So every (prediction, field) pair lands in exactly one of A or B, nothing
is counted twice and no bounded map of rows awaiting labels is needed. A later value of a
field already counted (a corrected label) stays in the store, where `joined()` and the
exports fold last-wins, but does not rewrite the running statistics: the confidence
sequences are valid for a stream that only grows, and whether a label is corrected does
not depend on which version answered the request, so neither arm gains. Send a label
when it is final. In shadow mode a pair of rows (shadow
and stable on the same request_id) is counted when the later of the two is read, via the
request_id index. Each evaluation therefore costs O(new rows × log(table)), not O(log):
see benchmarks/analysis.py.

Baseline (`baseline_role="baseline"`): a fresh instance of the stable version that the
gateway logs with role "baseline". In a canary it is routed the canary's share and is the
arm the canary is judged against (like for like: same share, same warm-up; production's
"stable" rows are then ignored). In a shadow it answers every mirrored request as well, and
production-vs-baseline disagreement is the noise floor (Diffy's practice): a request with
production, shadow and baseline rows is a triple, counted once when its last row is read,
and feeds the paired difference a_c − a_b (candidate's and baseline's agreement with
production) that `agreement`/`mean_abs_diff` criteria with `margin` are judged on.

Resources: `observe_resources(readings)` takes one reading per version (CPU seconds so far,
resident memory) from the version's resource source and counts the requests each version's
processes served since the previous reading (stable/canary/shadow rows; a baseline's rows
come from another instance), so `analysis.resources.ResourceWindows` can close windows into
CPU-per-request and peak-memory samples for the `cpu` and `memory` criteria.

Paired canary (`paired=True`): the gateway also sent each canary request to the stable
version (rows with role "paired", never served). Those rows are read only to pair with the
canary's row of the same request id, through the same pair query as shadow, and feed the
labelled pairs that quality criteria are judged on; error rate and latency stay judged on
each version's served calls (canary vs stable rows), as in any canary.

Restart: `state_dict()` holds the cursors and all running statistics (JSON-able);
`Evaluator.from_state(engine, state)` resumes exactly where it stopped. A controller that
prefers can also build a fresh Evaluator, which re-reads the rollout's rows from the start
(`rollout_id` / `since_ts` bound what it reads) — slower, same answer.

Paging by id assumes ids become visible in increasing order. SQLite has one writer at a
time; on PostgreSQL the log and feedback writers take a transaction-scoped advisory lock
before drawing ids (store/predictions.py `serialize_writers_in`), so a lower id is never
committed after a higher one is visible, whatever the number of gateway processes.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from coalmine.analysis.analysis import Analysis
from coalmine.analysis.criteria import Criterion
from coalmine.analysis.metrics import Obs
from coalmine.analysis.resources import ResourceWindows
from coalmine.analysis.result import CriterionResult, Judgement
from coalmine.store.feedback import FirstValues, first_values
from coalmine.store.schema import feedback, predictions

__all__ = ["CriterionResult", "Evaluator", "Judgement"]

P = predictions.alias("p")
Q = predictions.alias("q")
R = predictions.alias("r")
F = feedback.alias("f")
_CHUNK = 500  # request ids per IN (...) list


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


class Evaluator:
    """Judges `candidate` against `baseline` of `model` from the prediction log and feedback.

    `baseline_role="baseline"`: the gateway also runs a fresh instance of the `baseline`
    version (rows with role "baseline"). Canary: the canary is judged against it instead of
    production's "stable" rows. Shadow: judged against production as before, plus the noise
    floor, so `agreement`/`mean_abs_diff` criteria may use `margin` (refused otherwise).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        model: str,
        candidate: str,
        baseline: str,
        criteria: Sequence[Criterion] | None,
        mode: Literal["shadow", "canary"],
        alpha: float = 0.05,
        rollout_id: int | None = None,
        since_ts: float | None = None,
        task: Literal["classification", "regression"] = "classification",
        batch_limit: int = 50_000,
        max_slices: int = 20,
        classes: list[Any] | None = None,
        baseline_role: Literal["stable", "baseline"] = "stable",
        paired: bool = False,
    ) -> None:
        if baseline_role not in ("stable", "baseline"):
            raise ValueError(
                f"baseline_role: must be 'stable' or 'baseline' (got {baseline_role!r})"
            )
        self.engine = engine
        self.model, self.candidate, self.baseline = model, candidate, baseline
        self.mode, self.rollout_id, self.since_ts = mode, rollout_id, since_ts
        self.baseline_role = baseline_role
        self.batch_limit = batch_limit
        self.candidate_role = "shadow" if mode == "shadow" else "canary"
        # The one rule for which rows are whose (`_arm_filter`, `_matches` and `_arm_of` all
        # read it): (version, role) -> arm. Canary with a baseline: the canary is judged
        # against the fresh baseline instance routed the same share, and production's
        # long-running "stable" rows are ignored. Shadow with a baseline: the main
        # comparison stays shadow vs production; the baseline's rows only feed the noise
        # floor (the triple query), as arm "noise".
        like_for_like = mode == "canary" and baseline_role == "baseline"
        production_role = "baseline" if like_for_like else "stable"
        self.arms: dict[tuple[str, str], str] = {
            (candidate, self.candidate_role): "candidate",
            (baseline, production_role): "baseline",
        }
        # Paired canary: the stable version's copy of each canary request (role "paired")
        # is read only to pair with the canary's row of the same request id; it feeds the
        # label pairs that quality criteria are judged on, never the baseline arm's own
        # statistics (error rate and latency stay each version's served calls).
        if paired and mode != "canary":
            raise ValueError("paired: a paired canary needs mode 'canary'")
        self.paired = paired
        self.pair_arms: dict[tuple[str, str], str] = (
            {(candidate, "canary"): "candidate", (baseline, "paired"): "paired"}
            if paired
            else self.arms
        )
        if paired:
            self.arms = {**self.arms, (baseline, "paired"): "paired"}
        # the arm a candidate row is paired with on the same request id
        self.partner = "paired" if paired else "baseline"
        self.noise_floor = mode == "shadow" and baseline_role == "baseline"
        self.triple_arms: dict[tuple[str, str], str] = (
            {**self.arms, (baseline, "baseline"): "noise"} if self.noise_floor else {}
        )
        self.analysis = Analysis(
            criteria, task=task, mode=mode, alpha=alpha, classes=classes, max_slices=max_slices,
            noise_floor=self.noise_floor, like_for_like=like_for_like, paired=paired,
        )  # fmt: skip
        self.last_prediction_id = 0
        self.last_feedback_id = 0
        self.rows_read = 0
        self.labels_read = 0
        self.triples_read = 0
        self.resource_windows = ResourceWindows()
        self.last_resource_id: int | None = None  # prediction id at the previous reading
        self.pairs_read = 0

    @property
    def criteria(self) -> list[Criterion]:
        return self.analysis.criteria

    # -- SQL pieces ----------------------------------------------------------------------------
    def _arm_filter(
        self, t: Any, *, model_index: bool = True, arms: Mapping[tuple[str, str], str] | None = None
    ) -> ColumnElement[bool]:
        # model_index=False writes the model test as `model || ''`, which no index serves:
        # for the pair side of a join on request_id, SQLite otherwise walks (model, id) over
        # every earlier row for each new row (quadratic; minutes at 20k rows). Any join on
        # request_id (pairs, noise-floor triples) must pass it for every side but the
        # driving one; tests/analysis/test_engine_linear.py counts SQLite's work to keep it so.
        model = t.c.model if model_index else t.c.model + ""
        cond = and_(
            model == self.model,
            or_(*(and_(t.c.version == v, t.c.role == r) for v, r in (arms or self.arms))),
        )
        if self.rollout_id is not None:
            cond = and_(cond, t.c.rollout_id == self.rollout_id)
        if self.since_ts is not None:
            cond = and_(cond, t.c.ts >= self.since_ts)
        return cond

    def _matches(self, row: Any) -> bool:
        """`_arm_filter` (main arms) evaluated in Python on one row."""
        if row["model"] != self.model or (row["version"], row["role"]) not in self.arms:
            return False
        if self.rollout_id is not None and row["rollout_id"] != self.rollout_id:
            return False
        return self.since_ts is None or row["ts"] >= self.since_ts

    def _arm_of(self, version: str, role: str) -> str:
        """The arm of a row `_arm_filter` selected ("candidate", "baseline" or "noise")."""
        return self.triple_arms.get((version, role)) or self.arms[(version, role)]

    @staticmethod
    def _first_values(conn: Any, request_ids: set[str], upto: int) -> dict[str, FirstValues]:
        """The first value of each feedback field of these requests, from items ≤ `upto`.

        Driven by request_id (its index), in chunks, so the cost follows the rows asked for.
        """
        if upto <= 0 or not request_ids:
            return {}
        ids = sorted(request_ids)
        rows: list[Any] = []
        for i in range(0, len(ids), _CHUNK):
            rows += conn.execute(
                select(F.c.id, F.c.request_id, F.c.label, F.c.outcomes)
                .where(F.c.request_id.in_(ids[i : i + _CHUNK]), F.c.id <= upto)
            ).all()  # fmt: skip
        return first_values(rows)

    @staticmethod
    def _obs(row: Mapping[str, Any], prefix: str = "", label: Any = None, outcomes: Any = None,
             has_label: bool = False) -> Obs:  # fmt: skip
        slices = _loads(row[prefix + "slices"])
        return Obs(
            prediction=_loads(row[prefix + "prediction"]),
            scores=_loads(row.get(prefix + "scores")),  # beside it: log_loss, auc, user metrics
            latency_ms=row[prefix + "latency_ms"],
            status=int(row[prefix + "status"]),
            error_class=row[prefix + "error_class"],
            slices=slices if isinstance(slices, dict) else None,
            step=int(row[prefix + "canary_weight_bp"] or 0),
            weight=float(row.get(prefix + "sample_weight") or 1.0),
            label=label,
            has_label=has_label,
            outcomes=outcomes if isinstance(outcomes, dict) else None,
        )

    # -- one evaluation ----------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> Judgement:
        """Read what is new since the last call, update the statistics, judge."""
        with self.engine.connect() as conn:
            p_old, f_old = self.last_prediction_id, self.last_feedback_id
            p_max = conn.execute(
                select(func.max(predictions.c.id)).where(predictions.c.model == self.model)
            ).scalar()
            f_max = conn.execute(select(func.max(feedback.c.id))).scalar()
            p_max = int(p_max or p_old)
            f_max = int(f_max or f_old)
            # cap the feedback window so one call stays bounded after a long pause
            f_cap = conn.execute(
                select(feedback.c.id).where(feedback.c.id > f_old).order_by(feedback.c.id)
                .offset(self.batch_limit - 1).limit(1)
            ).scalar()  # fmt: skip
            f_new = min(f_max, int(f_cap)) if f_cap is not None else f_max

            # A: new prediction rows, with feedback that is already old
            stmt = (
                select(P).where(P.c.id > p_old, P.c.id <= p_max, self._arm_filter(P))
                .order_by(P.c.id).limit(self.batch_limit)
            )  # fmt: skip
            rows: list[Any] = [r._mapping for r in conn.execute(stmt)]
            p_new = int(rows[-1]["id"]) if len(rows) == self.batch_limit else p_max
            old = self._first_values(conn, {r["request_id"] for r in rows}, f_old)
            self._read_predictions(rows, old)
            if (self.mode == "shadow" or self.paired) and rows:
                self._read_new_pairs(conn, p_old, p_new, f_old)
            if self.noise_floor and p_new > p_old:
                # not only when `rows` has some: the baseline's row may complete a triple alone
                self._read_new_triples(conn, p_old, p_new)

            # B: new feedback rows joined to prediction rows already read (id ≤ P_new).
            # Queries driven by the new feedback ids, so the database never walks the
            # prediction log (a planner may otherwise scan predictions by model and id).
            if f_new > f_old:
                touched = set(conn.execute(
                    select(F.c.request_id).where(F.c.id > f_old, F.c.id <= f_new)
                ).scalars())  # fmt: skip
                # each touched request's fields up to F_new; only those first valued after
                # F_old are new (a correction or a repeat brings none)
                new: dict[str, tuple[int, FirstValues]] = {}
                for rid, fv in self._first_values(conn, touched, f_new).items():
                    first_new = fv.first_id_after(f_old)
                    if first_new is not None:
                        new[rid] = (first_new, fv)
                ids = sorted(new)
                fb_rows: list[tuple[int, Any, FirstValues]] = []
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i : i + _CHUNK]
                    # request_id alone in SQL, so the planner must use its index; the
                    # rest of the filter is applied here
                    for r in conn.execute(select(P).where(P.c.request_id.in_(chunk))):
                        if r.id <= p_new and self._matches(r._mapping):
                            first_new, fv = new[r.request_id]
                            fb_rows.append((first_new, r._mapping, fv))
                fb_rows.sort(key=lambda t: (t[0], t[1]["id"]))
                self._read_feedback(fb_rows, f_old)
        self.last_prediction_id, self.last_feedback_id = p_new, f_new
        return self.analysis.judge(now=time.time() if now is None else now)

    def _read_predictions(
        self, rows: list[Mapping[str, Any]], old: Mapping[str, FirstValues]
    ) -> None:
        by_arm: dict[str, list[Obs]] = defaultdict(list)
        labelled: dict[str, list[Obs]] = defaultdict(list)
        for row in rows:
            fv = old.get(row["request_id"])
            label, has_label, outcomes = fv.since(0) if fv else (None, False, {})
            obs = self._obs(row, label=label, outcomes=outcomes, has_label=has_label)
            arm = self._arm_of(row["version"], row["role"])
            if arm == "paired":
                continue  # only ever half of a pair (`_read_new_pairs`)
            by_arm[arm].append(obs)
            if has_label or obs.outcomes:
                labelled[arm].append(obs)
        # production's rows first: the count test needs the rate they were logged at for
        # the candidate's errors of the same step (analysis/sampling.py)
        for arm, obs_list in sorted(by_arm.items(), key=lambda kv: kv[0] != "baseline"):
            self.analysis.observe_requests(arm, obs_list)
        for arm, obs_list in labelled.items():
            self.analysis.observe_labels(arm, obs_list)
            self.labels_read += len(obs_list)
        self.rows_read += len(rows)

    def _read_new_pairs(self, conn: Any, p_old: int, p_new: int, f_old: int) -> None:
        """Shadow (or paired canary): pairs completed by a new row (the later row is new)."""
        arms = self.pair_arms
        stmt = (
            select(
                P.c.request_id, P.c.version, P.c.role, P.c.prediction, P.c.latency_ms, P.c.status,
                P.c.error_class, P.c.slices, P.c.canary_weight_bp, P.c.scores,
                Q.c.prediction.label("q_prediction"), Q.c.scores.label("q_scores"),
                Q.c.latency_ms.label("q_latency_ms"),
                Q.c.status.label("q_status"), Q.c.error_class.label("q_error_class"),
                Q.c.slices.label("q_slices"), Q.c.canary_weight_bp.label("q_canary_weight_bp"),
            )
            .select_from(P.join(Q, and_(Q.c.request_id == P.c.request_id, Q.c.id < P.c.id)))
            .where(P.c.id > p_old, P.c.id <= p_new, self._arm_filter(P, arms=arms),
                   self._arm_filter(Q, model_index=False, arms=arms),
                   or_(P.c.version != Q.c.version, P.c.role != Q.c.role))
        )  # fmt: skip
        request_pairs: list[tuple[Obs, Obs]] = []
        label_pairs: list[tuple[Obs, Obs]] = []
        found = [r._mapping for r in conn.execute(stmt)]
        # labels already old (≤ F_old) complete labelled pairs here; later ones in B
        old = self._first_values(conn, {row["request_id"] for row in found}, f_old)
        for row in found:
            fv = old.get(row["request_id"])
            label, has_label, _ = fv.since(0) if fv else (None, False, {})
            mine = self._obs(row, label=label, has_label=has_label)
            other = self._obs(row, "q_", label=label, has_label=has_label)
            if self._arm_of(row["version"], row["role"]) == "candidate":
                pair = (mine, other)
            else:
                pair = (other, mine)
            request_pairs.append(pair)
            if has_label:
                label_pairs.append(pair)
        # in a paired canary the judge reads agreement from these and never errors or
        # latency (judge._is_paired): a copy is not served, those stay per arm
        self.analysis.observe_request_pairs(request_pairs)
        self.analysis.observe_label_pairs(label_pairs)
        self.pairs_read += len(request_pairs)

    def _read_new_triples(self, conn: Any, p_old: int, p_new: int) -> None:
        """Noise floor: requests answered by production, shadow and baseline, counted once.

        Driven by the new rows (P, via the (model, id) index) like the pair query; the other
        two rows of the request (Q, R) are found through the request_id index and must be
        older than P, so a triple is read exactly once: when its last row is read. Q's role
        sorts before R's, so the two orders of the older rows are not both counted.
        """
        arms = self.triple_arms
        cols = ("version", "role", "prediction", "latency_ms", "status", "error_class",
                "slices", "canary_weight_bp")  # fmt: skip
        stmt = (
            select(*(P.c[k] for k in cols), *(Q.c[k].label(f"q_{k}") for k in cols),
                   *(R.c[k].label(f"r_{k}") for k in cols))
            .select_from(
                P.join(Q, and_(Q.c.request_id == P.c.request_id, Q.c.id < P.c.id))
                .join(R, and_(R.c.request_id == P.c.request_id, R.c.id < P.c.id))
            )
            .where(P.c.id > p_old, P.c.id <= p_new, self._arm_filter(P, arms=arms),
                   self._arm_filter(Q, model_index=False, arms=arms),
                   self._arm_filter(R, model_index=False, arms=arms),
                   P.c.role != Q.c.role, P.c.role != R.c.role, Q.c.role < R.c.role)
        )  # fmt: skip
        triples: list[tuple[Obs, Obs, Obs]] = []
        for r in conn.execute(stmt):
            row = r._mapping
            by_arm = {
                self._arm_of(row[f"{x}version"], row[f"{x}role"]): self._obs(row, x)
                for x in ("", "q_", "r_")
            }
            if len(by_arm) == 3:
                triples.append((by_arm["candidate"], by_arm["baseline"], by_arm["noise"]))
        self.analysis.observe_request_triples(triples)
        self.triples_read += len(triples)

    def _read_feedback(
        self, rows: list[tuple[int, Mapping[str, Any], FirstValues]], f_old: int
    ) -> None:
        """Prediction rows whose request got fields first valued after `f_old`: those only."""
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        first: dict[str, FirstValues] = {}
        for _, row, fv in rows:
            groups[row["request_id"]].append(row)
            first[row["request_id"]] = fv
        by_arm: dict[str, list[Obs]] = defaultdict(list)
        label_pairs: list[tuple[Obs, Obs]] = []
        for request_id, group in groups.items():
            label, has_label, outcomes = first[request_id].since(f_old)
            arms: dict[str, Obs] = {}
            for row in group:
                obs = self._obs(row, label=label, outcomes=outcomes, has_label=has_label)
                arm = self._arm_of(row["version"], row["role"])
                arms.setdefault(arm, obs)
                if arm != "paired":
                    by_arm[arm].append(obs)
            partner, candidate = arms.get(self.partner), arms.get("candidate")
            pairing = self.mode == "shadow" or self.paired
            if pairing and has_label and partner is not None and candidate is not None:
                label_pairs.append((candidate, partner))
        for arm, obs_list in by_arm.items():
            self.analysis.observe_labels(arm, obs_list)
            self.labels_read += len(obs_list)
        self.analysis.observe_label_pairs(label_pairs)

    # -- resources ----------------------------------------------------------------------------
    def observe_resources(self, read: Callable[[str], Any]) -> None:
        """Count the requests each version served since the last call; `read(version)` the
        versions whose window is due (`sources.resources.Reading`, or None: not measured
        this time). Reading only when due keeps the scrape's own CPU out of small windows."""
        with self.engine.connect() as conn:
            p_max = int(conn.execute(
                select(func.max(predictions.c.id)).where(predictions.c.model == self.model)
            ).scalar() or 0)  # fmt: skip
            served: dict[str, int] = {}
            if self.last_resource_id is not None and p_max > self.last_resource_id:
                stmt = (
                    select(predictions.c.version, func.count())
                    .where(predictions.c.model == self.model,
                           predictions.c.id > self.last_resource_id, predictions.c.id <= p_max,
                           predictions.c.version.in_([self.candidate, self.baseline]),
                           predictions.c.role != "baseline")
                    .group_by(predictions.c.version)
                )  # fmt: skip
                served = {str(v): int(n) for v, n in conn.execute(stmt)}
        self.last_resource_id = p_max
        windows = self.resource_windows
        for version, arm in ((self.candidate, "candidate"), (self.baseline, "baseline")):
            windows.add_requests(version, served.get(version, 0))
            r = read(version) if windows.due(version) else None
            if r is None:
                continue
            sample = windows.observe(version, r.cpu_seconds, r.memory_bytes)
            if sample is not None:
                self.analysis.add_resources(
                    arm, cpu=[sample.cpu_ms_per_request], memory_mb=[sample.memory_mb],
                    cpu_lag=[] if sample.cpu_lag is None else [sample.cpu_lag],
                    memory_lag=[] if sample.memory_lag is None else [sample.memory_lag],
                )  # fmt: skip

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "model": self.model, "candidate": self.candidate, "baseline": self.baseline,
            "mode": self.mode, "rollout_id": self.rollout_id, "since_ts": self.since_ts,
            "batch_limit": self.batch_limit, "baseline_role": self.baseline_role,
            "paired": self.paired, "pairs_read": self.pairs_read,
            "triples_read": self.triples_read,
            "last_prediction_id": self.last_prediction_id,
            "last_feedback_id": self.last_feedback_id,
            "rows_read": self.rows_read, "labels_read": self.labels_read,
            "analysis": self.analysis.state_dict(),
            "resources": {"windows": self.resource_windows.state_dict(),
                          "last_prediction_id": self.last_resource_id},
        }  # fmt: skip

    @classmethod
    def from_state(cls, engine: Engine, state: Mapping[str, Any]) -> Evaluator:
        """Resume an Evaluator saved with `state_dict()` (same cursors, same statistics)."""
        a = state["analysis"]
        ev = cls(
            engine, model=state["model"], candidate=state["candidate"],
            baseline=state["baseline"],
            criteria=[Criterion.model_validate(c) for c in a["criteria"]], mode=state["mode"],
            alpha=a["alpha"], rollout_id=state["rollout_id"], since_ts=state["since_ts"],
            task=a["task"], batch_limit=state["batch_limit"], max_slices=a["max_slices"],
            classes=a.get("classes"), baseline_role=state.get("baseline_role", "stable"),
            paired=bool(state.get("paired", False)),
        )  # fmt: skip
        ev.analysis = Analysis.from_state(a)
        ev.last_prediction_id = int(state["last_prediction_id"])
        ev.last_feedback_id = int(state["last_feedback_id"])
        ev.rows_read, ev.labels_read = int(state["rows_read"]), int(state["labels_read"])
        ev.triples_read = int(state.get("triples_read", 0))
        if "resources" in state:
            ev.resource_windows = ResourceWindows.from_state(state["resources"]["windows"])
            ev.last_resource_id = state["resources"]["last_prediction_id"]
        ev.pairs_read = int(state.get("pairs_read", 0))
        return ev
