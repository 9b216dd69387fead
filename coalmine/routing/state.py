"""The live routing state of one model, as the gateway applies it (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field

BASIS_POINTS = 10_000  # weights are integers in 0..10000: steps of 0.01%


@dataclass(frozen=True, slots=True)
class RouteState:
    """Who serves a model right now. Weights are in basis points (1 bp = 0.01%)."""

    model: str
    stable: str
    canary: str | None = None
    canary_weight_bp: int = 0
    shadow: str | None = None
    mirror_bp: int = 0
    salt: str = ""
    rollout_id: int | None = None
    revision: int = 1
    urls: dict[str, str] = field(default_factory=dict)  # version -> base URL
    guard_failures: int = 0  # fast-guard threshold for this model; 0 = gateway default

    def __post_init__(self) -> None:
        for name in ("canary_weight_bp", "mirror_bp"):
            value = getattr(self, name)
            if not 0 <= value <= BASIS_POINTS:
                raise ValueError(f"{name} must be within 0..{BASIS_POINTS}, got {value}")


def percent_to_bp(percent: float) -> int:
    return round(percent * 100)
