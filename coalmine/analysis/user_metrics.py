"""The allow-list of user metrics: the only per-example functions a criterion may name.

A criterion names a user metric `user:<name>`; `<name>` must be on this list. The list is
filled in two ways, both by code the operator runs, never by data a request carries:

- the server (`coalmine serve`) installs the config file's `user_metrics:` section
  (name -> "module:function") at start, importing each function then;
- a library user registers a function in their own process (`register_user_metric`),
  e.g. before running `Analysis` on an exported log.

Why: a spec arrives over the control API, and a module path in it would let whoever holds
the token import any module and call any function with a prediction (which the candidate's
server controls) and a label (which a feedback call controls): `user:builtins:exec` ran code
in the controller. A name can only select what the operator already chose to load.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coalmine.config import NAME_PATTERN, USER_METRIC_TARGET

__all__ = [
    "UserMetric",
    "UserMetricError",
    "available",
    "install_user_metrics",
    "lookup",
    "refusal",
    "register_user_metric",
]

UserMetric = Callable[[Any, Any], float]  # f(prediction, label) -> float, one example


class UserMetricError(ValueError):
    """A user metric that is not on the allow-list, or that cannot be loaded onto it."""


@dataclass(frozen=True)
class _Entry:
    function: UserMetric
    target: str  # "module:function", what the operator declared


# Replaced whole by `install_user_metrics` (one assignment: readers in other threads see the
# old list or the new one, never a half-built one).
_allowed: dict[str, _Entry] = {}


def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise UserMetricError(
            f"user metric name {name!r}: letters, digits, '.', '_' or '-', at most 63"
        )


def _import(target: str) -> UserMetric:
    if not re.match(USER_METRIC_TARGET, target):
        raise UserMetricError(f"{target!r} is not of the form module.path:function")
    module_name, function_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserMetricError(f"cannot import module {module_name!r}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserMetricError(f"module {module_name!r} has no function {function_name!r}")
    return function


def install_user_metrics(targets: Mapping[str, str]) -> None:
    """Make `targets` (name -> "module:function", from the server's config file) the whole
    allow-list, importing every function now.

    Raises UserMetricError naming every entry that cannot be loaded; the list is then
    unchanged. Call it at start, with the operator's configuration only.
    """
    global _allowed
    loaded: dict[str, _Entry] = {}
    errors: list[str] = []
    for name, target in targets.items():
        try:
            _check_name(name)
            loaded[name] = _Entry(_import(target), target)
        except UserMetricError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise UserMetricError("; ".join(errors))
    _allowed = loaded


def register_user_metric(name: str, function: UserMetric) -> None:
    """Allow `user:<name>` in this process, computed by `function(prediction, label)`.

    For library use (your own code, your own process). A name already registered to a
    different function is refused rather than silently replaced.
    """
    global _allowed
    _check_name(name)
    if not callable(function):
        raise UserMetricError(f"user metric {name!r}: {function!r} is not callable")
    current = _allowed.get(name)
    if current is not None and current.function is not function:
        raise UserMetricError(f"user metric {name!r} is already registered ({current.target})")
    target = f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', '?')}"
    _allowed = {**_allowed, name: _Entry(function, target)}


def available() -> dict[str, str]:
    """The allow-list: name -> "module:function", sorted by name."""
    return {name: _allowed[name].target for name in sorted(_allowed)}


def refusal(name: str) -> str:
    """Why `user:<name>` cannot be used: it is not on the list (which names what is)."""
    names = ", ".join(f"user:{n}" for n in sorted(_allowed)) or "none"
    return (
        f"user metric {name!r} is not allow-listed: user metrics are declared by name under "
        f"user_metrics in the server's config file (available: {names})"
    )


def lookup(name: str) -> UserMetric:
    """The function allow-listed as `name`; UserMetricError (listing the names) if none."""
    entry = _allowed.get(name)
    if entry is None:
        raise UserMetricError(refusal(name))
    return entry.function
