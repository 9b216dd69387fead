"""Running statistics per version × slice × canary-weight step, fed row by row (pure).

Everything here is O(1) in the number of rows: `Moments` (n, Σx, Σx²) per metric, a
fixed-bin latency histogram, bounded bin counts for drift, and small AUC batch buffers.
The whole state round-trips through `to_dict`/`from_dict` (plain JSON types).

Vocabulary:
- arm: "candidate" (canary or shadow) or "baseline" (production);
- slice key: "" for all traffic, "attr=value" for one value of a slice attribute;
- step: the canary weight (basis points) in force when the call was made. Statistics are
  kept per step so the judge can stratify by it (the ramp trap: see judge.py).
- request-level metrics (errors, latency, drift) come from every logged call; label-level
  metrics (quality, outcomes) from calls whose feedback has arrived; pair-level metrics
  (shadow) from the same request answered by both versions.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coalmine.analysis import outputs
from coalmine.analysis.sequential import LogHistogram, Moments
from coalmine.analysis.slices import SlicePool

__all__ = ["ARMS", "FLOOR", "OVERALL", "ArmSlice", "Obs", "PairCell", "SliceStats", "Stats"]

ARMS = ("candidate", "baseline")
OVERALL = ""  # the slice key of all traffic
ERROR_CLASSES = frozenset({"http_5xx", "timeout", "connection"})
NO_RESPONSE = frozenset({"timeout", "connection"})
AUC_BATCH = 200  # labelled examples per AUC batch (see `_auc`)
MAX_DRIFT_BINS = 512
MAX_CATEGORIES = 64
FLOOR = "_floor"  # suffix of the noise-floor keys: "agree_floor", "abs_diff_floor"


@dataclass(slots=True)
class Obs:
    """One logged call of one version, with its label and outcomes when known."""

    prediction: Any = None
    latency_ms: float | None = None
    status: int = 200
    error_class: str | None = None
    slices: Mapping[str, Any] | None = None
    step: int = 0  # canary weight in basis points at call time
    label: Any = None
    has_label: bool = False
    outcomes: Mapping[str, Any] | None = None
    scores: Any = None  # the probabilities/scores logged beside the prediction, if any
    weight: float = 1.0  # calls the row stands for: 1/rate of a sampled stable row

    @property
    def is_error(self) -> bool:
        if self.error_class is not None:
            return self.error_class in ERROR_CLASSES
        return self.status == 0 or self.status >= 500

    @property
    def answered(self) -> bool:
        return self.status != 0 and self.error_class not in NO_RESPONSE


def _moments_dict(d: Mapping[str, Moments]) -> dict[str, Any]:
    return {k: m.to_dict() for k, m in d.items()}


def _moments_from(d: Mapping[str, Any]) -> dict[str, Moments]:
    return {k: Moments.from_dict(v) for k, v in d.items()}


@dataclass
class ArmCell:
    """One arm in one slice at one step."""

    moments: dict[str, Moments] = field(default_factory=dict)
    auc_buffer: list[tuple[float, int]] = field(default_factory=list)

    def m(self, key: str) -> Moments:
        got = self.moments.get(key)
        if got is None:
            got = self.moments[key] = Moments()
        return got

    def to_dict(self) -> dict[str, Any]:
        return {"moments": _moments_dict(self.moments), "auc_buffer": self.auc_buffer}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArmCell:
        return cls(_moments_from(d["moments"]), [(float(s), int(y)) for s, y in d["auc_buffer"]])


def drift_bin(out: outputs.Output | None, task: str) -> str | None:
    """The bin of one prediction: its class (classification) or a 19%-wide log bin (values).

    Data-independent bins keep both arms comparable without a reference sample; the judge
    merges sparse bins before computing PSI/JS.
    """
    if out is None:
        return None
    if task == "classification":
        return None if out.cls is None else str(out.cls)
    if out.value is None or not math.isfinite(out.value):
        return None
    v = out.value
    if abs(v) < 1e-9:
        return "0"
    b = math.floor(4 * math.log2(abs(v)))
    return f"{'-' if v < 0 else '+'}{b}"


def drift_order(key: str) -> tuple[float, str]:
    """Sort key putting value bins in numeric order (categories alphabetically)."""
    if key == "0":
        return (0.0, key)
    if key[:1] in "+-" and key.isascii() and key[1:].lstrip("-").isdigit():
        mag = 2 ** (int(key[1:]) / 4)
        return ((-mag if key[0] == "-" else mag), key)
    return (math.inf, key)


@dataclass
class ArmSlice:
    """One arm in one slice: per-step cells and the step-free sketches."""

    steps: dict[int, ArmCell] = field(default_factory=dict)
    latency: LogHistogram = field(default_factory=LogHistogram)
    error_classes: dict[str, int] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    labelled: int = 0
    unscorable: int = 0

    def cell(self, step: int) -> ArmCell:
        got = self.steps.get(step)
        if got is None:
            got = self.steps[step] = ArmCell()
        return got

    def pooled(self, key: str) -> Moments:
        out = Moments()
        for c in self.steps.values():
            if key in c.moments:
                out = out.merge(c.moments[key])
        return out

    def n(self, key: str) -> int:
        return self.pooled(key).n

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": {str(k): v.to_dict() for k, v in self.steps.items()},
            "latency": self.latency.to_dict(),
            "error_classes": self.error_classes,
            "drift": self.drift,
            "requests": self.requests,
            "labelled": self.labelled,
            "unscorable": self.unscorable,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArmSlice:
        return cls(
            {int(k): ArmCell.from_dict(v) for k, v in d["steps"].items()},
            LogHistogram.from_dict(d["latency"]),
            dict(d["error_classes"]),
            dict(d["drift"]),
            int(d["requests"]),
            int(d["labelled"]),
            int(d["unscorable"]),
        )


@dataclass
class PairCell:
    """Shadow pairs in one slice: per-request values of both versions on the same request.

    Each metric keeps the cross moments (n, Σc, Σb, Σc², Σb², Σcb), from which the Moments
    of d = c − κ·b follow exactly for any κ (κ = 1: the paired difference; κ = max_ratio:
    a ratio criterion). `diffs` holds per-batch differences (AUC), `single` one-sample
    streams (agreement, |difference|).
    """

    diffs: dict[str, Moments] = field(default_factory=dict)
    single: dict[str, Moments] = field(default_factory=dict)  # agreement, abs diff
    cross: dict[str, list[float]] = field(default_factory=dict)  # [n, Σc, Σb, Σc², Σb², Σcb]
    auc_buffer: list[tuple[float, float, int]] = field(default_factory=list)
    pairs: int = 0

    def d(self, key: str) -> Moments:
        got = self.diffs.get(key)
        if got is None:
            got = self.diffs[key] = Moments()
        return got

    def s(self, key: str) -> Moments:
        got = self.single.get(key)
        if got is None:
            got = self.single[key] = Moments()
        return got

    def add_cross(self, key: str, c: float, b: float) -> None:
        v = self.cross.setdefault(key, [0.0] * 6)
        v[0] += 1
        v[1] += c
        v[2] += b
        v[3] += c * c
        v[4] += b * b
        v[5] += c * b

    def side(self, key: str, which: str) -> Moments:
        """Moments of one side's own values of `key` ("c" or "b"), from the cross moments.

        For the noise-floor keys "b" is the baseline's agreement with production: the noise
        floor itself, as a one-sample stream (kept inside the cross moments, not twice).
        """
        n, sc, sb, scc, sbb, _ = self.cross.get(key, [0.0] * 6)
        return Moments(int(n), sc, scc) if which == "c" else Moments(int(n), sb, sbb)

    def has(self, key: str) -> bool:
        return self.cross.get(key, [0.0])[0] > 0 or (key in self.diffs and self.diffs[key].n > 0)

    def paired(self, key: str, kappa: float = 1.0) -> Moments:
        """Moments of the paired differences of `key` (c − κ·b)."""
        if key in self.diffs:
            return self.diffs[key]
        return self.ratio_diff(key, kappa)

    def ratio_diff(self, key: str, kappa: float) -> Moments:
        """Moments of d = c − κ·b over the pairs."""
        n, sc, sb, scc, sbb, scb = self.cross.get(key, [0.0] * 6)
        return Moments(int(n), sc - kappa * sb, scc - 2 * kappa * scb + kappa * kappa * sbb)

    def to_dict(self) -> dict[str, Any]:
        return {
            "diffs": _moments_dict(self.diffs),
            "single": _moments_dict(self.single),
            "cross": self.cross,
            "auc_buffer": self.auc_buffer,
            "pairs": self.pairs,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairCell:
        return cls(
            _moments_from(d["diffs"]),
            _moments_from(d["single"]),
            {k: [float(x) for x in v] for k, v in d["cross"].items()},
            [(float(a), float(b), int(y)) for a, b, y in d["auc_buffer"]],
            int(d["pairs"]),
        )


@dataclass
class SliceStats:
    candidate: ArmSlice = field(default_factory=ArmSlice)
    baseline: ArmSlice = field(default_factory=ArmSlice)
    pairs: PairCell = field(default_factory=PairCell)

    def arm(self, arm: str) -> ArmSlice:
        return self.candidate if arm == "candidate" else self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_dict(),
            "baseline": self.baseline.to_dict(),
            "pairs": self.pairs.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SliceStats:
        return cls(
            ArmSlice.from_dict(d["candidate"]),
            ArmSlice.from_dict(d["baseline"]),
            PairCell.from_dict(d["pairs"]),
        )


def batch_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUC of one batch (Mann–Whitney with mid-ranks); None without both classes."""
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return None
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


UserFn = Callable[..., float]  # f(prediction, label) or f(prediction, label, scores)


@dataclass
class Example:
    """One labelled example of one arm, reduced to the numbers the metrics use."""

    values: dict[str, float]
    score: float | None = None
    y: int | None = None


def _takes_scores(fn: Callable[..., Any]) -> bool:
    """Whether a user metric takes a third argument, the instance's logged scores."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: (prediction, label)
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


class Stats:
    """All running statistics of one comparison (candidate vs baseline)."""

    def __init__(
        self,
        *,
        task: str = "classification",
        classes: list[Any] | None = None,
        user_metrics: Mapping[str, UserFn] | None = None,
        outcome_names: Iterable[str] = (),
        max_slices: int = 20,
        track_drift: bool = True,
    ) -> None:
        self.task = task
        self.track_drift = track_drift
        self.classes = classes
        self.user_metrics = dict(user_metrics or {})
        self._with_scores = {n for n, fn in self.user_metrics.items() if _takes_scores(fn)}
        self.outcome_names = set(outcome_names)
        self.max_slices = max_slices
        self.slices: dict[str, SliceStats] = {OVERALL: SliceStats()}  # all tracked values
        self.pool = SlicePool(max_slices)  # which values are tracked and which judged
        # inputs that could not be used, reported in the judgement's notes (never silent):
        # latencies that are NaN, infinite or negative, per arm; labelled examples whose
        # label and predicted class cannot match (an index against a name), with one example
        self.bad_latency = {arm: 0 for arm in ARMS}
        self.label_mismatch = 0
        self.mismatch_example = ""
        self._mismatch = ""  # set by `example` for the row being read

    # -- slices ---------------------------------------------------------------------------
    def keys_for(self, slices: Mapping[str, Any] | None, *, count: bool = False) -> list[str]:
        """The slice keys a row belongs to: all traffic plus each tracked slice value.

        `count=True` for request rows only (each logged call once): the rows per value decide
        which values are tracked and judged (slices.py), and nothing else may, so that the
        choice never depends on an outcome.
        """
        keys = [OVERALL]
        for attr, value in (slices or {}).items():
            if value is None or isinstance(value, dict | list):
                continue
            key = f"{attr}={value}"
            if count:
                tracked, evicted = self.pool.see(key)
                if evicted is not None:
                    del self.slices[evicted]
                if tracked and key not in self.slices:
                    self.slices[key] = SliceStats()
            if key in self.slices:
                keys.append(key)
        # a later attribute of the same row may have evicted an earlier one's value
        return [k for k in keys if k in self.slices] if count else keys

    @property
    def judged(self) -> list[str]:
        """The slice values judged (at most max_slices, see slices.py)."""
        return self.pool.judged

    # -- per-example reduction --------------------------------------------------------------
    def example(
        self, out: outputs.Output | None, raw: Any, label: Any, scores: Any = None
    ) -> Example | None:
        if isinstance(label, dict):
            label = next((label[k] for k in ("label", "value", "y", "class") if k in label), None)
        if out is None or label is None:
            return None
        values: dict[str, float] = {}
        score: float | None = None
        y: int | None = None
        if self.task == "classification":
            if out.cls is None:
                return None
            if not outputs.comparable(out.cls, label, self.classes):
                self._mismatch = f"label {label!r} vs predicted {out.cls!r}"
                return None
            values["accuracy"] = float(outputs.same_class(out.cls, label, self.classes))
            loss = outputs.log_loss(out, label, self.classes)
            if loss is not None:
                values["log_loss"] = loss
            y = outputs.binary_target(out, label, self.classes)
            score = out.p1 if y is not None else None
        else:
            try:
                target = float(label)
            except (TypeError, ValueError):
                return None
            if out.value is None or not math.isfinite(target):
                return None
            err = out.value - target
            values["abs_err"] = abs(err)
            values["sq_err"] = err * err
        for name, fn in self.user_metrics.items():
            try:
                v = float(fn(raw, label, scores) if name in self._with_scores else fn(raw, label))
            except Exception:  # a user metric failing on one example must not stop analysis
                continue
            if math.isfinite(v):
                values[name] = v
        return Example(values, score, y)

    def _examples(self, obs: Obs) -> list[Example | None]:
        # log_loss and AUC read the logged scores beside each instance's label; user
        # metrics get the prediction as logged, and the scores apart (see `example`)
        pairs = outputs.examples(
            outputs.with_scores(obs.prediction, obs.scores), obs.label, self.task
        )
        if len(pairs) > 1:
            instances = outputs._unwrap(obs.prediction)
            rows = obs.scores if isinstance(obs.scores, list) else []
            scores = rows if len(rows) == len(pairs) else [None] * len(pairs)
        else:
            instances, scores = [obs.prediction], [obs.scores]
        return [
            self.example(o, raw, lab, s)
            for (o, lab), raw, s in zip(pairs, instances, scores, strict=False)
        ]

    # -- request-level ------------------------------------------------------------------
    def _flush(self, arm: str, pending: Mapping[tuple[str, int, str], list[float]]) -> None:
        # Values are collected per cell and added in one vectorised call per cell and batch;
        # a slice value evicted from the pool during the batch (slices.py) loses its share.
        for (key, step, name), values in pending.items():
            if key in self.slices:
                self.slices[key].arm(arm).cell(step).m(name).add(values)

    def add_requests(self, arm: str, rows: Iterable[Obs]) -> None:
        pending: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        latencies: dict[str, list[float]] = defaultdict(list)
        max_bins = MAX_CATEGORIES if self.task == "classification" else MAX_DRIFT_BINS
        for obs in rows:
            bins: list[str | None] = []
            if self.track_drift and obs.prediction is not None:
                bins = [
                    drift_bin(o, self.task) for o in outputs.normalize(obs.prediction, self.task)
                ]
            err = 1.0 if obs.is_error else 0.0
            lat = obs.latency_ms
            has_lat = obs.answered and lat is not None and math.isfinite(lat) and lat >= 0
            if obs.answered and lat is not None and not has_lat:
                self.bad_latency[arm] += 1
            code = f"http_{obs.status}" if obs.status >= 400 or obs.status == 0 else None
            for key in self.keys_for(obs.slices, count=True):
                s = self.slices[key].arm(arm)
                s.requests += 1
                pending[(key, obs.step, "error")].append(err)
                if obs.error_class is not None:
                    s.error_classes[obs.error_class] = s.error_classes.get(obs.error_class, 0) + 1
                if code is not None:
                    s.error_classes[code] = s.error_classes.get(code, 0) + 1
                if has_lat:
                    pending[(key, obs.step, "latency")].append(lat)  # type: ignore[arg-type]
                    latencies[key].append(lat)  # type: ignore[arg-type]
                for b in bins:
                    if b is None:
                        continue
                    if b not in s.drift and len(s.drift) >= max_bins:
                        b = "(other)"
                    s.drift[b] = s.drift.get(b, 0) + 1
        self._flush(arm, pending)
        for key, values in latencies.items():
            if key in self.slices:
                self.slices[key].arm(arm).latency.add(values)

    def add_labels(self, arm: str, rows: Iterable[Obs]) -> None:
        """Rows whose label (and/or business outcomes) arrived: quality and outcomes."""
        pending: dict[tuple[str, int, str], list[float]] = defaultdict(list)
        for obs in rows:
            self._mismatch = ""
            examples = self._examples(obs) if obs.has_label and obs.prediction is not None else []
            if self._mismatch:
                self.label_mismatch += 1
                self.mismatch_example = self.mismatch_example or self._mismatch
            outcome_values = {
                k: float(v)
                for k, v in (obs.outcomes or {}).items()
                if k in self.outcome_names and _finite(v)
            }
            bad = obs.has_label and (not examples or any(e is None for e in examples))
            for key in self.keys_for(obs.slices):
                s = self.slices[key].arm(arm)
                if bad:
                    s.unscorable += 1
                for ex in examples:
                    if ex is None:
                        continue
                    s.labelled += 1
                    for name, v in ex.values.items():
                        pending[(key, obs.step, name)].append(v)
                    if ex.score is not None and ex.y is not None:
                        cell = s.cell(obs.step)
                        cell.auc_buffer.append((ex.score, ex.y))
                        if len(cell.auc_buffer) >= AUC_BATCH:
                            arr = np.asarray(cell.auc_buffer)
                            auc = batch_auc(arr[:, 0], arr[:, 1].astype(int))
                            if auc is not None:
                                pending[(key, obs.step, "auc")].append(auc)
                            cell.auc_buffer.clear()
                for name, v in outcome_values.items():
                    pending[(key, obs.step, f"outcome:{name}")].append(v)
        self._flush(arm, pending)

    # -- shadow pairs -----------------------------------------------------------------------
    def _closeness(self, c: Obs, b: Obs) -> tuple[str, float] | None:
        """("agree", 0/1) or ("abs_diff", |c − b|) of two answers to one request, if defined."""
        if c.prediction is None or b.prediction is None:
            return None
        oc = outputs.normalize(c.prediction, self.task)
        ob = outputs.normalize(b.prediction, self.task)
        if len(oc) != 1 or len(ob) != 1 or oc[0] is None or ob[0] is None:
            return None
        if self.task == "classification" and oc[0].cls is not None:
            return "agree", float(outputs.same_class(oc[0].cls, ob[0].cls, self.classes))
        if self.task == "regression" and None not in (oc[0].value, ob[0].value):
            return "abs_diff", abs(float(oc[0].value) - float(ob[0].value))  # type: ignore[arg-type]
        return None

    def add_request_pairs(self, pairs: Iterable[tuple[Obs, Obs]]) -> None:
        """The same request answered by candidate (first) and baseline (second)."""
        for c, b in pairs:
            close = self._closeness(c, b)
            agree = close[1] if close and close[0] == "agree" else None
            abs_diff = close[1] if close and close[0] == "abs_diff" else None
            for key in self.keys_for(b.slices or c.slices):
                p = self.slices[key].pairs
                p.pairs += 1
                p.add_cross("error", float(c.is_error), float(b.is_error))
                if (
                    c.answered
                    and b.answered
                    and c.latency_ms is not None
                    and b.latency_ms is not None
                ):
                    p.add_cross("latency", float(c.latency_ms), float(b.latency_ms))
                if agree is not None:
                    p.s("agree").add_one(agree)
                if abs_diff is not None:
                    p.s("abs_diff").add_one(abs_diff)

    def add_request_triples(self, triples: Iterable[tuple[Obs, Obs, Obs]]) -> None:
        """Noise floor: one request answered by candidate, production and a fresh baseline.

        Per request, a_c = closeness of candidate to production and a_b = closeness of the
        baseline (same version as production) to production: agreement (classification)
        or |difference| (regression). They go in as cross moments under "agree_floor" /
        "abs_diff_floor", so the judge gets the paired differences a_c − a_b (Var small,
        every request counts for both) and `PairCell.side(key, "b")` the noise floor itself.
        """
        for c, p, b in triples:
            close_c, close_b = self._closeness(c, p), self._closeness(b, p)
            if close_c is None or close_b is None:
                continue
            name = f"{close_c[0]}{FLOOR}"
            for key in self.keys_for(p.slices or c.slices or b.slices):
                self.slices[key].pairs.add_cross(name, close_c[1], close_b[1])

    def add_label_pairs(self, pairs: Iterable[tuple[Obs, Obs]]) -> None:
        """Labelled shadow pairs: d_i = metric_c(i) − metric_b(i) on the same example."""
        for c, b in pairs:
            if not c.has_label or c.prediction is None or b.prediction is None:
                continue
            ec, eb = self._examples(c), self._examples(b)
            if len(ec) != len(eb):
                continue
            for key in self.keys_for(b.slices or c.slices):
                p = self.slices[key].pairs
                for xc, xb in zip(ec, eb, strict=True):
                    if xc is None or xb is None:
                        continue
                    for name in xc.values.keys() & xb.values.keys():
                        p.add_cross(name, xc.values[name], xb.values[name])
                    if None not in (xc.score, xb.score, xc.y):
                        p.auc_buffer.append((xc.score, xb.score, xc.y))  # type: ignore[arg-type]
                        if len(p.auc_buffer) >= AUC_BATCH:
                            arr = np.asarray(p.auc_buffer)
                            y = arr[:, 2].astype(int)
                            ac, ab = batch_auc(arr[:, 0], y), batch_auc(arr[:, 1], y)
                            if ac is not None and ab is not None:
                                p.d("auc").add_one(ac - ab)
                            p.auc_buffer.clear()

    def add_resources(
        self,
        arm: str,
        *,
        cpu: Iterable[float] = (),
        memory_mb: Iterable[float] = (),
        cpu_lag: Iterable[float] = (),
        memory_lag: Iterable[float] = (),
    ) -> None:
        """Resource samples of one version's serving processes (overall slice, step 0);
        `*_lag`: products of successive samples, for their autocorrelation (resources.py)."""
        cell = self.slices[OVERALL].arm(arm).cell(0)
        for key, values in (("cpu", cpu), ("memory", memory_mb), ("cpu_lag", cpu_lag),
                            ("memory_lag", memory_lag)):  # fmt: skip
            for v in values:
                cell.m(key).add_one(v)
        # the peak memory so far, kept as a one-value Moments (so it persists like the rest)
        for v in memory_mb:
            peak = cell.moments.get("memory_peak")
            if peak is None or v > peak.total:
                cell.moments["memory_peak"] = Moments(1, float(v), float(v) * float(v))

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "max_slices": self.max_slices,
            "pool": self.pool.to_dict(),
            "bad_latency": self.bad_latency,
            "label_mismatch": [self.label_mismatch, self.mismatch_example],
            "slices": {k: v.to_dict() for k, v in self.slices.items()},
        }

    def load(self, d: Mapping[str, Any]) -> None:
        self.slices = {k: SliceStats.from_dict(v) for k, v in d["slices"].items()}
        if "pool" in d:
            self.pool = SlicePool.from_dict(self.max_slices, d["pool"])
        else:  # saved before the pool: the slices it has were the judged ones
            self.pool = SlicePool(self.max_slices)
            for k, v in self.slices.items():
                if k != OVERALL:
                    self.pool.track(k, v.candidate.requests + v.baseline.requests)
            self.pool.rows = sum(self.pool.counts.values())
            self.pool.admit(0)
        self.bad_latency = {arm: int(d.get("bad_latency", {}).get(arm, 0)) for arm in ARMS}
        count, example = d.get("label_mismatch", [0, ""])
        self.label_mismatch, self.mismatch_example = int(count), str(example)


def _finite(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)) or (
        isinstance(v, bool)
    )
