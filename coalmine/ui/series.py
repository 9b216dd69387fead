"""Pure reductions of logged calls into the time series the dashboard and report draw.

No I/O here: `story.py` reads rows from the store and hands them over as plain tuples.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "Call",
    "Series",
    "agrees",
    "bucket_width",
    "class_distribution",
    "disagreement",
    "is_error",
    "latency_error_series",
    "parsed",
    "point_of_json",
    "point_value",
    "quantile",
    "rate_series",
    "resource_series",
    "resource_totals",
    "share_series",
    "totals",
]

# Errors of the version (no answer, timeout, 5xx); a 4xx is the caller's fault.
_ERROR_CLASSES = frozenset({"timeout", "connection", "http_5xx"})
_NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True, slots=True)
class Call:
    """One logged call reduced to what the charts need; `group` is the version's part."""

    ts: float
    group: str  # production | candidate (canary) | shadow | baseline
    latency_ms: float
    error: bool
    weight: float = 1.0  # calls the row stands for (1/rate of a sampled stable row)


@dataclass(slots=True)
class Series:
    x: list[float]
    y: list[float | None]
    n: list[int]


def is_error(status: int | None, error_class: str | None) -> bool:
    if error_class is not None:
        return error_class in _ERROR_CLASSES
    return status is None or status == 0 or status >= 500


def bucket_width(duration_s: float, buckets: int = 60) -> float:
    """A round bucket width giving about `buckets` points over the duration."""
    target = max(duration_s, 1.0) / buckets
    for width in _NICE_WIDTHS:
        if width >= target:
            return float(width)
    return float(_NICE_WIDTHS[-1])


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _bucket(ts: float, start: float, width: float) -> float:
    return start + math.floor((ts - start) / width) * width


def latency_error_series(
    calls: Iterable[Call], start: float, width: float
) -> dict[str, dict[str, Series]]:
    """Per group: p50 and p95 latency, error rate, per time bucket (x = bucket start)."""
    latencies: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, Counter[float]] = defaultdict(Counter)
    for call in calls:
        b = _bucket(call.ts, start, width)
        latencies[call.group][b].append(call.latency_ms)
        if call.error:
            errors[call.group][b] += 1
    out: dict[str, dict[str, Series]] = {}
    for group, by_bucket in sorted(latencies.items()):
        xs = sorted(by_bucket)
        ns = [len(by_bucket[x]) for x in xs]
        out[group] = {
            "p50": Series(xs, [quantile(by_bucket[x], 0.5) for x in xs], ns),
            "p95": Series(xs, [quantile(by_bucket[x], 0.95) for x in xs], ns),
            "error_rate": Series(
                xs, [errors[group][x] / n for x, n in zip(xs, ns, strict=True)], ns
            ),
        }
    return out


def share_series(
    calls: Iterable[Call], start: float, width: float, *, part: str, whole: Sequence[str]
) -> Series:
    """Per bucket, the share of `whole` groups' calls that went to `part` (observed split);
    a sampled row counts for the calls it stands for, so a 5% canary shows 5%, not its share
    of logged rows."""
    counts: dict[float, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for call in calls:
        counts[_bucket(call.ts, start, width)][call.group] += call.weight
    xs = sorted(counts)
    ys: list[float | None] = []
    ns: list[int] = []
    for x in xs:
        total = sum(counts[x][g] for g in whole)
        ys.append(counts[x][part] / total if total else None)
        ns.append(round(total))
    return Series(xs, ys, ns)


def rate_series(points: Iterable[tuple[float, bool]], start: float, width: float) -> Series:
    """Per bucket, the share of True among (ts, flag) points (e.g. shadow agreement)."""
    hits: Counter[float] = Counter()
    totals: Counter[float] = Counter()
    for ts, flag in points:
        b = _bucket(ts, start, width)
        totals[b] += 1
        hits[b] += int(flag)
    xs = sorted(totals)
    return Series(xs, [hits[x] / totals[x] for x in xs], [totals[x] for x in xs])


def resource_series(
    judgements: Iterable[tuple[float, Mapping[str, Any] | None]],
) -> dict[str, dict[str, Series]]:
    """Per version: `cpu` (CPU ms per request served) and `memory` (the window's peak
    resident MB) of each resource window, at the judgement that first recorded it.

    Every judgement carries each version's newest window (`resources`, from
    `analysis.resources.ResourceWindows.latest`); a window closes only at an evaluation, so
    the judgement's time is the window's end. `n` is the window's number in its phase."""
    seen: dict[str, tuple[Any, ...]] = {}
    out: dict[str, dict[str, Series]] = {}
    for ts, judgement in judgements:
        windows = judgement.get("resources") if isinstance(judgement, Mapping) else None
        if not isinstance(windows, Mapping):
            continue
        for version, w in windows.items():
            if not isinstance(w, Mapping):
                continue
            cpu, memory = w.get("cpu_ms_per_request"), w.get("memory_mb")
            # the same window repeats in every judgement until the next one closes (the
            # count restarts with each phase's evaluator; the values tell them apart)
            key = (w.get("windows"), cpu, memory)
            if seen.get(version) == key:
                continue
            seen[version] = key
            series = out.setdefault(str(version), {"cpu": Series([], [], []),
                                                   "memory": Series([], [], [])})  # fmt: skip
            n = int(w.get("windows") or 0)
            for name, value in (("cpu", cpu), ("memory", memory)):
                series[name].x.append(ts)
                series[name].y.append(_finite_or_none(value))
                series[name].n.append(n)
    return dict(sorted(out.items()))


def resource_totals(resources: Mapping[str, Mapping[str, Series]]) -> dict[str, dict[str, float]]:
    """Per version over the drawn windows: how many, mean and newest CPU ms per request,
    peak and newest resident MB (what `cpu` compares: means; `memory`: peaks)."""
    out: dict[str, dict[str, float]] = {}
    for version, series in resources.items():
        cpu = [y for y in series["cpu"].y if y is not None]
        memory = [y for y in series["memory"].y if y is not None]
        if not cpu and not memory:
            continue
        out[version] = {
            "windows": float(len(series["cpu"].x)),
            "cpu_mean": sum(cpu) / len(cpu) if cpu else math.nan,
            "cpu_last": cpu[-1] if cpu else math.nan,
            "memory_peak": max(memory) if memory else math.nan,
            "memory_last": memory[-1] if memory else math.nan,
        }
    return out


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


_POINT_KEYS = ("prediction", "predictions", "label", "class", "value", "y", "output", "result")


def point_value(obj: Any) -> Any:
    """The comparable point prediction (or label) inside a model's or feedback's JSON.

    Model servers answer `3`, `[3]`, `{"prediction": 3}` or `{"predictions": [3]}`, with
    probabilities beside it; all reduce to 3. Unknown shapes are compared whole.
    """
    for _ in range(5):  # bounded unwrapping of nested wrappers
        if isinstance(obj, dict) and isinstance(obj.get("outputs"), list) and obj["outputs"]:
            # Open Inference Protocol V2: the "predict" output tensor, else the first
            outputs = [o for o in obj["outputs"] if isinstance(o, dict)]
            named = [o for o in outputs if o.get("name") == "predict"] or outputs
            obj = named[0].get("data") if named else None
        elif isinstance(obj, dict):
            for key in _POINT_KEYS:
                if key in obj:
                    obj = obj[key]
                    break
            else:
                return obj
        elif isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        else:
            return obj
    return obj


def agrees(a: Any, b: Any, *, rel_tol: float = 1e-6) -> bool:
    """Whether two point predictions agree: equal classes, or numbers within rel_tol."""
    a, b = point_value(a), point_value(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-12)
    return bool(a == b)


def disagreement(a: Any, b: Any) -> float:
    """How far apart two predictions are: |a − b| for numbers, 1 or 0 for classes."""
    a, b = point_value(a), point_value(b)
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return abs(float(a) - float(b))
    return 0.0 if a == b else 1.0


def class_distribution(predictions: Iterable[Any], limit: int = 12) -> dict[str, float]:
    """Share of each predicted class (the `limit` most common; the rest as 'other')."""
    counts = Counter(str(point_value(p)) for p in predictions)
    total = sum(counts.values())
    if not total:
        return {}
    top = counts.most_common(limit)
    out = {k: v / total for k, v in top}
    rest = total - sum(v for _, v in top)
    if rest:
        out["other"] = rest / total
    return out


def totals(calls: Iterable[Call]) -> dict[str, dict[str, float]]:
    """Per group over the whole window: calls (sampled rows counting for the calls they
    stand for), p50 and p95 latency (ms), error rate (of the rows: a uniform subsample)."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    made: dict[str, float] = defaultdict(float)
    for call in calls:
        latencies[call.group].append(call.latency_ms)
        errors[call.group] += int(call.error)
        made[call.group] += call.weight
    return {
        group: {
            "n": round(made[group]) * 1.0,
            "p50": quantile(values, 0.5) or 0.0,
            "p95": quantile(values, 0.95) or 0.0,
            "error_rate": errors[group] / len(values),
        }
        for group, values in sorted(latencies.items())
    }


@lru_cache(maxsize=8192)
def parsed(text: str | None) -> Any:
    """JSON text parsed once: logged predictions, labels and slices repeat a few values
    (classes, regions) thousands of times. Callers must not mutate the result."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@lru_cache(maxsize=8192)
def point_of_json(text: str | None) -> Any:
    """`point_value` of a logged JSON text, computed once per distinct text."""
    return point_value(parsed(text))
