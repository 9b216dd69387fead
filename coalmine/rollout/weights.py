"""Pure weight math: spec percentages to basis points, and the route a rollout phase wants.

The controller never edits routes field by field: it renders the route the rollout's state
calls for (`desired_route`) and writes that, in the same transaction as the transition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from coalmine.rollout.spec import RolloutSpec
from coalmine.routing.split import baseline_share
from coalmine.routing.state import BASIS_POINTS, percent_to_bp

__all__ = [
    "RouteTarget", "baseline_bp", "desired_route", "mirror_bp", "step_weight_bp", "step_weights_bp",
]  # fmt: skip


def step_weights_bp(spec: RolloutSpec) -> list[int]:
    return [percent_to_bp(s.weight) for s in spec.canary.steps]


def step_weight_bp(spec: RolloutSpec, index: int) -> int:
    return step_weights_bp(spec)[index]


def mirror_bp(spec: RolloutSpec) -> int:
    return min(BASIS_POINTS, percent_to_bp(spec.shadow.mirror_share))


def baseline_bp(canary_weight_bp: int) -> int:
    """The baseline's share in basis points (`routing.split.baseline_share`)."""
    return round(BASIS_POINTS * baseline_share(canary_weight_bp / BASIS_POINTS))


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What the `routes` row of the model should hold (the fields a rollout controls)."""

    stable: str
    canary: str | None
    canary_weight_bp: int
    shadow: str | None
    mirror_bp: int
    rollout_id: int | None
    guard_failures: int = 0  # the fast guard's threshold while the rollout runs; 0 = default
    baseline_url: str | None = None  # set while a baseline is routed or mirrored to
    baseline_bp: int = 0
    paired: bool = False  # paired canary: the stable version also answers canary requests

    def as_changes(self) -> dict[str, Any]:
        return asdict(self)


def desired_route(
    phase: str,
    *,
    candidate: str,
    previous_stable: str,
    canary_weight_bp: int,
    mirror_bp: int,
    rollout_id: int,
    guard_failures: int = 0,
    baseline_url: str | None = None,
    paired: bool = False,
) -> RouteTarget:
    """The route for a rollout in `phase` holding the given weights.

    With a `baseline_url` the baseline is routed a share equal to the canary's and, while
    the shadow is mirrored, receives the same copies (the gateway's rule); it is cleared
    with the rest of the rollout's route when the rollout ends.
    """
    idle = RouteTarget(previous_stable, None, 0, None, 0, None)
    if phase == "promoted":
        return RouteTarget(candidate, None, 0, None, 0, None)
    if phase in ("rolled_back", "rolling_back", "aborted", "completed"):
        return idle
    if phase == "pending":
        return RouteTarget(previous_stable, None, 0, None, 0, rollout_id)
    # shadow, canary, paused, promoting: hold whatever weights the state carries
    share = baseline_bp(canary_weight_bp) if baseline_url else 0
    return RouteTarget(
        stable=previous_stable,
        canary=candidate if canary_weight_bp > 0 else None,
        canary_weight_bp=canary_weight_bp,
        shadow=candidate if mirror_bp > 0 else None,
        mirror_bp=mirror_bp,
        rollout_id=rollout_id,
        guard_failures=guard_failures,
        baseline_url=baseline_url if share > 0 or mirror_bp > 0 else None,
        baseline_bp=share,
        paired=paired and canary_weight_bp > 0,
    )
