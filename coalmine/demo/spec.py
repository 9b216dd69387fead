"""The demo's rollout spec and traffic settings, scaled by `--speed` (pure).

Chosen so the evidence arrives in time at the default rate, on data whose effects are
known offline (train.py): v2 is ~8 points better than v1, v3 ~2.5 points worse than v2
overall but ~13 points worse in one region.

- Accuracy margin 3 points: v3's overall loss (2.5) stays inside it, so only the per-slice
  judgement (south: 13 points) can fail it — paired in shadow, about 1,500 requests.
- Shadow accuracy must PASS (the judge's default for paired quality): v2's +8 points prove
  non-inferiority within a few hundred labelled requests.
- Canary criteria are guard rails (must not fail): error rate and p95 latency against
  production, and accuracy again. A not_fail criterion advances a step only once it has
  ruled out the step's power floor (the default: margin + 20 points / √share), so the
  first step is 10% and the traffic comes from 2,000 users (with a few hundred, a sticky
  5% split gave the canary under 3% of requests): each step then sees the labelled
  samples its floor needs well within its max duration (120 s: a busy machine sends
  fewer requests a second, so the same samples take longer).
- CPU per request and peak memory are judged in the shadow, read from each version's
  serve-model process (stack.py): in a full mirror both versions serve the same requests, so CPU
  per request compares like for like (a small canary's fixed costs, spread over few
  requests, read high). Each needs 5 windows of 20 requests per version, a few seconds at
  the demo's rate. `cpu` is a guard rail (must not fail; 1.25× production's CPU per
  request). `memory` must PASS: a peak is measured, not estimated, so it PASSes as soon
  as both versions have 5 windows and the candidate's peak is within 1.1× production's
  (the versions are the same kind of model: a tenth more memory is a regression); as a
  must it makes sure the comparison was made before the candidate serves anyone (a
  shadow whose other criteria PASS early would otherwise advance on fewer windows). A
  PASS is "for now": a slow leak could pass it, so v4 leaks enough to fail it at once.
  v4 is v2's model served with a leak (`serve-model --leak-kb`): rolled back naming
  `memory`.

`speed` divides the minimum durations and the label delay; the request rate and sample
minimums stay, so a faster demo is less realistic in time, never on weaker evidence than
the criteria require.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LEAK_KB", "DemoSettings", "demo_settings"]

BASE_RATE = 150.0  # requests per second: within a 2-core machine's budget for all parts
USERS = 2000
# v4 keeps this much per call. The memory criterion decides once both versions have 5
# windows of at least 20 requests, so by then v4 has leaked at least 100 × 512 KB = 50 MB,
# above the 10% (~21 MB) it may exceed production's peak by, whatever the machine's speed.
# (128 KB passed a loaded run's shadow: its 5 windows came in 16 s, before the leak grew.)
LEAK_KB = 512.0
MEMORY_RATIO = 1.1


@dataclass(frozen=True)
class DemoSettings:
    rate: float
    users: int
    label_share: float
    label_delay_s: float
    spec: dict[str, Any]
    rollout_timeout_s: float


def _criteria() -> list[dict[str, Any]]:
    return [
        {"metric": "accuracy", "margin": 0.03},
        {"metric": "error_rate", "margin": 0.01},
        {"metric": "latency_p95", "max_ratio": 3.0},
    ]


def _resource_criteria() -> list[dict[str, Any]]:
    return [
        {"metric": "cpu", "max_ratio": 1.25, "must": "not_fail"},
        {"metric": "memory", "max_ratio": MEMORY_RATIO, "must": "pass"},
    ]


def demo_settings(speed: float = 1.0, rate: float | None = None) -> DemoSettings:
    if speed <= 0:
        raise ValueError("speed must be > 0")

    def seconds(base: float) -> str:
        return f"{max(base / speed, 0.5):.2f}s"

    spec = {
        "interval": seconds(1.0),
        "alpha": 0.05,
        "shadow": {
            "mirror_share": 100,
            "min_duration": seconds(8),
            "max_duration": "120s",
            "min_samples": 300,
            "criteria": _criteria() + _resource_criteria(),
        },
        "canary": {
            "steps": [10, 50, 100],
            "min_duration": seconds(5),
            # a step ends once its floors are ruled out (10-35 s here at the full rate); the
            # deadline is for a machine too busy to send the demo's rate, where a 60 s one
            # rolled a good v2 back at load 17 on 2 cores
            "max_duration": "120s",
            "min_samples": 40,
            "on_inconclusive": "fail",
            "criteria": _criteria(),
        },
        "on_failure": "rollback",
    }
    return DemoSettings(
        rate=rate or BASE_RATE,
        users=USERS,
        label_share=0.7,
        label_delay_s=max(2.0 / speed, 0.5),
        spec=spec,
        rollout_timeout_s=420.0,
    )
