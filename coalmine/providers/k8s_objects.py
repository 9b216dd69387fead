"""Pure helpers of the Kubernetes providers: weights, owned fields, diffs (no I/O).

Server-side apply makes the API server track, per field manager, which fields a manager
set (`metadata.managedFields`, in the `fieldsV1` format). Coalmine's picture of what the
cluster holds is the live object cut down to the fields the `coalmine` manager owns: a field
Coalmine stopped sending disappears from that picture only once the server removed it, and
fields other managers own (a team's own manifest, the controller's status) never show up as
differences.
"""

from __future__ import annotations

import json
from functools import reduce
from math import gcd
from typing import Any

from coalmine.routing.state import BASIS_POINTS

__all__ = [
    "FIELD_MANAGER",
    "Manifest",
    "diff_manifests",
    "owned_fields",
    "owned_manifest",
    "relative_weights",
    "whole_percent",
]

FIELD_MANAGER = "coalmine"
Manifest = dict[str, Any]


def relative_weights(shares_bp: list[int]) -> list[int]:
    """Basis-point shares as the smallest integer weights with the same ratios.

    Whole percents stay percents (95/5), so the object reads as a person would write it;
    finer shares stay exact (25.5% -> 149/51) rather than rounded.
    """
    if all(s % 100 == 0 for s in shares_bp):
        return [s // 100 for s in shares_bp]
    divisor = reduce(gcd, shares_bp)
    return [s // divisor for s in shares_bp]


def whole_percent(bp: int) -> int:
    """A share as an integer percent for an API that takes only those: nearest, but never 0
    or 100 unless the share is (a small canary step still reaches the canary)."""
    if bp <= 0:
        return 0
    if bp >= BASIS_POINTS:
        return 100
    return min(99, max(1, (bp + 50) // 100))


def owned_fields(value: Any, fields: dict[str, Any]) -> Any:
    """`value` cut down to the `fieldsV1` set `fields` (`{}` is a leaf: the whole value).

    `f:name` selects a map key, `k:{...}` the items of an associative list whose keys match,
    `v:...` a set item; `.` (the node itself) adds nothing to a map's children.
    """
    children = {k: v for k, v in fields.items() if k != "."}
    if not children:
        return value
    if isinstance(value, dict):
        return {
            key[2:]: owned_fields(value[key[2:]], sub)
            for key, sub in children.items()
            if key.startswith("f:") and key[2:] in value
        }
    if isinstance(value, list):
        kept = []
        for item in value:
            for key, sub in children.items():
                if key.startswith("k:") and isinstance(item, dict):
                    wanted = json.loads(key[2:])
                    if all(item.get(k) == v for k, v in wanted.items()):
                        kept.append(owned_fields(item, sub))
                elif key.startswith("v:") and json.loads(key[2:]) == item:
                    kept.append(item)
        return kept
    return value


def owned_manifest(live: Manifest, manager: str = FIELD_MANAGER) -> Manifest:
    """The live object as `manager` applied it: identity plus the fields it owns by Apply."""
    meta = live.get("metadata") or {}
    owned: Manifest = {}
    for entry in meta.get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and entry.get("apiVersion") == live.get("apiVersion")
        ):
            owned = owned_fields(live, entry.get("fieldsV1") or {})
    picture: Manifest = {
        "apiVersion": live.get("apiVersion"),
        "kind": live.get("kind"),
        **{k: v for k, v in owned.items() if k not in ("apiVersion", "kind", "metadata")},
    }
    picture["metadata"] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        **(owned.get("metadata") or {}),
    }
    return picture


def diff_manifests(desired: Any, current: Any, path: str = "") -> list[str]:
    """One line per differing field path, `path: current -> desired`; empty when equal."""
    if isinstance(desired, dict) and isinstance(current, dict):
        lines = []
        for key in sorted(desired.keys() | current.keys()):
            where = f"{path}.{key}" if path else key
            if key not in current:
                lines.append(f"{where}: absent -> {_show(desired[key])}")
            elif key not in desired:
                lines.append(f"{where}: {_show(current[key])} -> absent")
            else:
                lines.extend(diff_manifests(desired[key], current[key], where))
        return lines
    if isinstance(desired, list) and isinstance(current, list) and len(desired) == len(current):
        return [
            line
            for i, (d, c) in enumerate(zip(desired, current, strict=True))
            for line in diff_manifests(d, c, f"{path}[{i}]")
        ]
    if desired == current:
        return []
    return [f"{path}: {_show(current)} -> {_show(desired)}"]


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 200 else text[:197] + "..."
