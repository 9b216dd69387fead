"""`fast_spec()`: a rollout spec that decides in seconds, for tests of a pipeline."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["fast_spec"]

# Second-long phases and small sample minimums; the accuracy criterion allows a 5-point drop
# so that a candidate about as good as production PASSes after a few hundred paired answers,
# while a clearly worse one (10+ points) FAILs about as fast.
_FAST: dict[str, Any] = {
    "shadow": {
        "min_duration": 1,
        "max_duration": 60,
        "min_samples": 20,
        "criteria": [{"metric": "error_rate"}],
    },
    "canary": {
        "steps": [50, 100],
        "min_duration": 1,
        "max_duration": 60,
        "min_samples": 10,
        "criteria": [{"metric": "error_rate"}],
    },
    "interval": 0.25,
}
_QUALITY = {
    "classification": {"metric": "accuracy", "margin": 0.05},
    "regression": {"metric": "mae", "max_ratio": 1.2},
}


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, mapping into mapping; values copied, not shared."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fast_spec(task: str = "classification", **overrides: Any) -> dict[str, Any]:
    """A rollout spec (a mapping for `Client.start_rollout`) whose phases last seconds.

    Shadow judges error rate and the candidate's labelled quality (accuracy for
    classification, MAE for regression) against production's on the same requests, then
    the canary ramps 50% -> 100% guarded by the error rate. Every step lasts at least a
    second, at most a minute. Keyword arguments override any part, merged into the nested
    mappings: `fast_spec(canary={"steps": [10, 100]}, webhooks=[{"url": url}])`.
    Raises coalmine.config.ConfigError (field path and reason) for an invalid result.
    """
    from coalmine.rollout.spec import parse_spec  # pydantic: only when a spec is made

    if task not in _QUALITY:
        raise ValueError(f"task must be one of {sorted(_QUALITY)}, got {task!r}")
    base = copy.deepcopy(_FAST)
    base["shadow"]["criteria"].append(dict(_QUALITY[task]))
    spec = _merge(base, overrides)
    parse_spec(spec, "fast_spec()")
    return spec
