"""Weighted, sticky traffic split and mirror sampling: pure functions, no I/O.

A request's key (user id, session, ...) is hashed with a per-rollout salt into one of
10,000 buckets. The canary owns the buckets *below* its weight, so raising the weight only
adds buckets to the canary: a user once on the canary stays there, and users only ever move
from stable to canary, never back, while a rollout ramps up. A new salt (a new rollout)
reshuffles who is first.

An optional baseline (a fresh instance of the stable version) owns the buckets at the *top*,
[BUCKETS − baseline, BUCKETS): as both shares grow, users move from stable to baseline (the
same version) or to the canary, and a canary user never leaves the canary.
"""

from __future__ import annotations

import random
from hashlib import blake2b
from typing import Literal

from coalmine.routing.state import BASIS_POINTS

__all__ = [
    "BUCKETS", "Role", "assign", "baseline_share", "bucket_of", "candidate_fraction",
    "mirror_sampled", "random_bucket", "route",
]  # fmt: skip

BUCKETS = BASIS_POINTS  # one bucket per basis point: weights move in steps of 0.01%

Role = Literal["stable", "canary", "baseline"]


def baseline_share(canary_share: float) -> float:
    """The baseline's share of traffic (a fraction) when the canary has `canary_share`.

    The canary's own share, like for like, as far as the traffic allows: at 50% canary and
    baseline split all traffic, above it the baseline gets what is left, at 100% nothing.
    The controller routes this; the analysis and the planner assume it.
    """
    return max(0.0, min(canary_share, 1.0 - canary_share))


def candidate_fraction(canary_share: float) -> float:
    """The canary's fraction of the traffic it is compared with, against a baseline."""
    return canary_share / (canary_share + baseline_share(canary_share))


def bucket_of(key: str, salt: str) -> int:
    """The stable bucket (0..9999) of `key` under `salt`; the same on every process and host."""
    # blake2b, not hash(): Python's str hash is randomised per process, and every gateway
    # process (and every restart) must agree on a user's bucket.
    digest = blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def random_bucket(rng: random.Random) -> int:
    """A bucket for a request without a key: uniform, so the split still holds on average."""
    return rng.randrange(BUCKETS)


def assign(bucket: int, canary_weight_bp: int, baseline_bp: int = 0) -> Role:
    """The role that serves `bucket`: canary below its weight, baseline in the top share."""
    if bucket < canary_weight_bp:
        return "canary"
    if bucket >= BUCKETS - baseline_bp:
        return "baseline"
    return "stable"


def route(
    key: str | None, salt: str, canary_weight_bp: int, rng: random.Random, baseline_bp: int = 0
) -> Role:
    """`assign` for a request: sticky when it has a key, random per request when not."""
    if canary_weight_bp <= 0 and baseline_bp <= 0:
        return "stable"
    if canary_weight_bp >= BUCKETS:
        return "canary"
    bucket = bucket_of(key, salt) if key is not None else random_bucket(rng)
    return assign(bucket, canary_weight_bp, baseline_bp)


def mirror_sampled(rng: random.Random, mirror_bp: int) -> bool:
    """Whether to copy this request to the shadow, for a mirror share of `mirror_bp`."""
    if mirror_bp >= BUCKETS:
        return True
    if mirror_bp <= 0:
        return False
    return rng.randrange(BUCKETS) < mirror_bp
