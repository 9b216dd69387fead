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
    # A fresh instance of the stable version (Kayenta's baseline): it serves the top
    # `baseline_bp` buckets, like-for-like with the canary, and in shadow it also receives
    # every mirrored copy, so production-vs-baseline disagreement is the noise floor.
    baseline_url: str | None = None
    baseline_bp: int = 0
    # Paired canary: every request the canary answers is also copied (through the mirror's
    # bounded queue) to the stable version, logged as role "paired" and never returned, so
    # model-quality criteria are judged on the same requests, as in shadow.
    paired: bool = False

    def __post_init__(self) -> None:
        for name in ("canary_weight_bp", "mirror_bp", "baseline_bp"):
            value = getattr(self, name)
            if not 0 <= value <= BASIS_POINTS:
                raise ValueError(f"{name} must be within 0..{BASIS_POINTS}, got {value}")
        if self.canary_weight_bp + self.baseline_bp > BASIS_POINTS:
            raise ValueError(
                f"canary_weight_bp + baseline_bp must not exceed {BASIS_POINTS}, got "
                f"{self.canary_weight_bp} + {self.baseline_bp}"
            )
        if self.baseline_bp > 0 and not self.baseline_url:
            raise ValueError("baseline_bp > 0 needs a baseline_url")


def percent_to_bp(percent: float) -> int:
    return round(percent * 100)
