"""What callers hand the analysis, read one way for every caller (pure).

The public `Analysis` API, `coalmine analyze` (an exported log) and the engine's `Evaluator`
(the live log) all go through these rules, so one input never means two things:

- **errors**: per request, None/False/0 (no error), True/1 (an HTTP 5xx), an HTTP status code
  (≥ 500 is an error, 400–499 a client error that is not counted; 100–399 none), or an error
  class: `http_5xx`, `timeout`, `connection`, `http_4xx`, `http_<code>`. Anything else (a
  float such as 0.3, a word such as "error") is refused, naming the entry: a guess would
  silently count it as no error. 0/1 and status codes are told apart per list: 0/1 only is
  a flag list; codes must all be in 100–599.
- **latencies**: numbers in `latency_unit` ("ms" default, "s" or "us"), converted to ms;
  None = not measured. Strings are refused. NaN, infinite and negative values are kept and
  counted by the statistics (`Stats.bad_latency`), then reported in the judgement's notes,
  never used in a latency statistic and never dropped silently.
- **steps**: the canary weight in force at each request, in **basis points** (1% = 100,
  100% = 10,000), the unit of the controller's `canary_weight_bp`. Whole numbers in 0–10,000;
  0 means "one unknown share" (no stratification, no count test). A fractional value is
  refused, never truncated (0.05 would become 0).
- **labels vs predictions** (classification): a class is either an index (int, bool, "1")
  or a name ("cat"); an index never equals a name unless `classes` maps index i to
  `classes[i]`. Such a pair is refused at the API and counted as unscorable by the engine.
- numpy arrays and numpy scalars (int64, float64, bool_) are plain numbers everywhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ERROR_CLASSES",
    "LATENCY_UNITS",
    "check_alpha",
    "error_outcomes",
    "latencies_ms",
    "plain",
    "plain_list",
    "steps_bp",
]

ERROR_CLASSES = ("http_5xx", "timeout", "connection", "http_4xx")
LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001}
_ERRORS_HELP = (
    "give None/False/0 (no error), True/1 (an HTTP 5xx), an HTTP status code (≥ 500 is an "
    f"error) or an error class ({', '.join(ERROR_CLASSES)}, http_<code>)"
)


def plain(x: Any) -> Any:
    """A numpy scalar (or 0-d array) as the Python number it holds; anything else unchanged."""
    if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        return x.item()
    return x


def plain_list(values: Any, field: str) -> list[Any] | None:
    """A list of Python values from a list, tuple, numpy array or pandas Series."""
    if values is None:
        return None
    if isinstance(values, str | bytes | dict):
        raise ValueError(
            f"{field}: give one entry per request (a list), not {type(values).__name__}"
        )
    if hasattr(values, "tolist"):  # numpy arrays, pandas Series: numpy scalars become Python
        values = values.tolist()
    try:
        return [plain(v) for v in values]
    except TypeError:
        raise ValueError(f"{field}: give one entry per request (a list)") from None


def check_alpha(alpha: Any) -> float:
    alpha = plain(alpha)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ValueError(
            f"alpha: must be a number in (0, 1) (got {alpha!r}, a {type(alpha).__name__})"
        )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must be in (0, 1) (got {alpha!r})")
    return float(alpha)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) or (isinstance(x, float) and x.is_integer())


def _code_class(code: int) -> str | None:
    if code >= 500:
        return "http_5xx"
    if code >= 400:
        return "http_4xx"
    return None


def _class_of(text: str, where: str) -> tuple[str | None, int | None]:
    """An error class string → (class, status code if it names one)."""
    t = text.strip().lower()
    if t in ("", "none", "null"):
        return None, None
    if t in ERROR_CLASSES:
        return t, None
    if t.startswith("http_") and t.isascii() and t[5:].isdigit() and 100 <= int(t[5:]) <= 599:
        code = int(t[5:])
        return _code_class(code), code
    raise ValueError(f"{where}: {text!r} is not an error class; {_ERRORS_HELP}")


def error_outcomes(
    errors: Sequence[Any] | None, status: Sequence[Any] | None, n: int
) -> list[tuple[str | None, int]]:
    """(error class, status code) per request from `errors` and/or `status`.

    Status 0 means no response (the gateway's code for a timeout or refused connection).
    """
    codes: list[int | None] = [None] * n
    if status is not None:
        for i, s in enumerate(status):
            s = plain(s)
            if s is None:
                continue
            if isinstance(s, bool) or not _is_int(s) or not (s == 0 or 100 <= s <= 599):
                raise ValueError(
                    f"status[{i}]: must be an HTTP status code 100–599 or 0 (got {s!r})"
                )
            codes[i] = int(s)
    classes: list[str | None] = [None] * n
    if errors is not None:
        ints = [plain(e) for e in errors]
        numeric = [e for e in ints if not isinstance(e, bool) and isinstance(e, int | float)]
        flags = all(e in (0, 1) for e in numeric)  # 0/1 flags, else status codes
        for i, e in enumerate(ints):
            where = f"errors[{i}]"
            if e is None or e is False or (isinstance(e, float) and math.isnan(e)):
                continue
            if e is True:
                classes[i] = "http_5xx"
            elif isinstance(e, str):
                cls, code = _class_of(e, where)
                classes[i] = cls
                if code is not None and codes[i] is None:
                    codes[i] = code
            elif isinstance(e, int | float) and _is_int(e):
                v = int(e)
                if flags:
                    classes[i] = "http_5xx" if v == 1 else None
                elif 100 <= v <= 599:
                    classes[i] = _code_class(v)
                    if codes[i] is None:
                        codes[i] = v
                else:
                    raise ValueError(
                        f"{where}: {e!r} is neither a 0/1 flag nor an HTTP status code "
                        f"(100–599), and the list mixes both; {_ERRORS_HELP}"
                    )
            else:
                raise ValueError(
                    f"{where}: {e!r} ({type(e).__name__}) is not an error; {_ERRORS_HELP}"
                )
    out: list[tuple[str | None, int]] = []
    for cls, code in zip(classes, codes, strict=True):
        if code is None:
            code = {"http_5xx": 500, "http_4xx": 400, "timeout": 0, "connection": 0}.get(
                cls or "", 200
            )
        elif cls is None:
            cls = _code_class(code) if code else None
        out.append((cls, code))
    return out


def latencies_ms(values: Sequence[Any] | None, unit: str = "ms") -> list[float | None] | None:
    """Latencies in ms; None where not measured. NaN/inf/negative pass through (counted later)."""
    if unit not in LATENCY_UNITS:
        raise ValueError(f"latency_unit: must be one of {', '.join(LATENCY_UNITS)} (got {unit!r})")
    if values is None:
        return None
    scale = LATENCY_UNITS[unit]
    out: list[float | None] = []
    for i, v in enumerate(values):
        v = plain(v)
        if v is None:
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(
                f"latency_ms[{i}]: must be a number of {unit} (got {v!r}, a {type(v).__name__})"
            )
        else:
            out.append(float(v) * scale)
    return out


def steps_bp(values: Sequence[Any] | None) -> list[int] | None:
    """Canary weights in basis points, whole numbers 0–10,000; refused otherwise."""
    if values is None:
        return None
    out = []
    for i, v in enumerate(values):
        v = plain(v)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not _is_int(v):
            hint = (
                f"; {v!r} looks like a fraction: give {round(float(v) * 10_000):g}"
                if isinstance(v, float) and 0 < v < 1
                else ""
            )
            raise ValueError(
                f"steps[{i}]: the canary weight in basis points, a whole number 0–10,000 "
                f"(5% = 500; got {v!r}){hint}"
            )
        bp = int(float(v))
        if not 0 <= bp <= 10_000:
            raise ValueError(f"steps[{i}]: must be in 0–10,000 basis points (got {v!r})")
        out.append(bp)
    return out
