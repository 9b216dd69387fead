"""The split math: shares within binomial tolerance, stickiness, monotone ramp-up."""

from __future__ import annotations

import math
import random

import pytest

from coalmine.routing.split import (
    BUCKETS,
    assign,
    bucket_of,
    mirror_sampled,
    random_bucket,
    route,
)
from coalmine.routing.state import RouteState

# Tolerance: 5 standard deviations of a binomial share; with fixed seeds the tests are
# deterministic, and a correct implementation would fail one with probability ~6e-7.
Z = 5.0


def within_binomial(hits: int, n: int, p: float) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(hits - n * p) <= Z * sd + 1


def test_bucket_is_deterministic_and_in_range() -> None:
    assert bucket_of("user-1", "salt") == bucket_of("user-1", "salt")
    buckets = {bucket_of(f"user-{i}", "salt") for i in range(5000)}
    assert all(0 <= b < BUCKETS for b in buckets)
    # 5000 keys over 10,000 buckets: a good hash leaves few collisions
    assert len(buckets) > 3500


def test_salt_reshuffles_users() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    same = sum(bucket_of(k, "rollout-1") == bucket_of(k, "rollout-2") for k in keys)
    assert same < 20


@pytest.mark.parametrize("weight_bp", [1, 100, 1000, 2500, 5000, 9000, 9999])
def test_keyed_split_share_within_binomial_tolerance(weight_bp: int) -> None:
    n = 40_000
    canary = sum(route(f"user-{i}", "s", weight_bp, random.Random(0)) == "canary" for i in range(n))
    assert within_binomial(canary, n, weight_bp / BUCKETS)


@pytest.mark.parametrize("weight_bp", [100, 1000, 5000])
def test_unkeyed_split_share_within_binomial_tolerance(weight_bp: int) -> None:
    rng = random.Random(42)
    n = 40_000
    canary = sum(route(None, "s", weight_bp, rng) == "canary" for _ in range(n))
    assert within_binomial(canary, n, weight_bp / BUCKETS)


def test_unkeyed_requests_are_not_sticky() -> None:
    rng = random.Random(7)
    roles = {route(None, "s", 5000, rng) for _ in range(100)}
    assert roles == {"stable", "canary"}


def test_weight_bounds() -> None:
    rng = random.Random(0)
    assert all(route(f"u{i}", "s", 0, rng) == "stable" for i in range(1000))
    assert all(route(f"u{i}", "s", BUCKETS, rng) == "canary" for i in range(1000))
    assert assign(0, 1) == "canary"
    assert assign(1, 1) == "stable"
    assert assign(BUCKETS - 1, BUCKETS) == "canary"


@pytest.mark.parametrize("seed", range(5))
def test_raising_the_weight_only_moves_users_from_stable_to_canary(seed: int) -> None:
    rng = random.Random(seed)
    salt = f"salt-{seed}"
    keys = [f"user-{rng.randrange(10**9)}" for _ in range(3000)]
    weights = sorted(rng.sample(range(BUCKETS + 1), 12))
    previous = {k: route(k, salt, weights[0], rng) for k in keys}
    for weight in weights[1:]:
        current = {k: route(k, salt, weight, rng) for k in keys}
        for k in keys:
            # once on the canary, always on the canary as the weight grows
            if previous[k] == "canary":
                assert current[k] == "canary", (k, weight)
        # and the same key gets the same answer every time (sticky across requests)
        assert current == {k: route(k, salt, weight, rng) for k in keys}
        previous = current


def test_random_bucket_is_uniform() -> None:
    rng = random.Random(3)
    n = 50_000
    low = sum(random_bucket(rng) < BUCKETS // 4 for _ in range(n))
    assert within_binomial(low, n, 0.25)


@pytest.mark.parametrize("mirror_bp", [0, 1, 500, 5000, 9999, 10_000])
def test_mirror_share_within_binomial_tolerance(mirror_bp: int) -> None:
    rng = random.Random(11)
    n = 40_000
    copies = sum(mirror_sampled(rng, mirror_bp) for _ in range(n))
    p = mirror_bp / BUCKETS
    assert within_binomial(copies, n, p)
    if mirror_bp in (0, BUCKETS):
        assert copies == n * p


def test_route_state_rejects_out_of_range_weights() -> None:
    with pytest.raises(ValueError, match="canary_weight_bp"):
        RouteState(model="m", stable="v1", canary="v2", canary_weight_bp=10_001)
    with pytest.raises(ValueError, match="mirror_bp"):
        RouteState(model="m", stable="v1", mirror_bp=-1)


def test_baseline_takes_the_top_share_and_canary_users_never_move() -> None:
    rng = random.Random(7)
    keys = [f"user-{i}" for i in range(20_000)]
    ramp = [(100, 100), (500, 500), (2500, 2500), (5000, 5000)]
    previous: dict[str, str] = {}
    for canary_bp, baseline_bp in ramp:
        roles = {k: route(k, "s", canary_bp, rng, baseline_bp) for k in keys}
        n = len(keys)
        for role, bp in (("canary", canary_bp), ("baseline", baseline_bp)):
            hits = sum(r == role for r in roles.values())
            assert within_binomial(hits, n, bp / BUCKETS), (role, bp, hits)
        for k, before in previous.items():
            if before == "canary":
                assert roles[k] == "canary"  # a canary user stays on the canary
            if before == "baseline":
                assert roles[k] in ("baseline", "canary")  # never back to production
        previous = roles
    # at 50/50 production serves nobody
    assert "stable" not in set(previous.values())


def test_baseline_without_canary_and_unkeyed_requests() -> None:
    rng = random.Random(3)
    assert assign(9999, 0, 1) == "baseline"
    assert assign(9998, 0, 1) == "stable"
    assert assign(0, 1, 1) == "canary"
    hits = sum(route(None, "s", 0, rng, 1000) == "baseline" for _ in range(20_000))
    assert within_binomial(hits, 20_000, 0.1)


def test_route_state_rejects_overlapping_or_urlless_baseline() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        RouteState(model="m", stable="v1", canary="v2", canary_weight_bp=6000,
                   baseline_url="http://b", baseline_bp=5000)  # fmt: skip
    with pytest.raises(ValueError, match="needs a baseline_url"):
        RouteState(model="m", stable="v1", baseline_bp=100)


def test_baseline_share_is_the_canarys_while_it_fits() -> None:
    from coalmine.routing.split import baseline_share, candidate_fraction

    assert [baseline_share(s) for s in (0.0, 0.05, 0.5, 0.75, 1.0)] == [0.0, 0.05, 0.5, 0.25, 0.0]
    assert candidate_fraction(0.05) == 0.5 and candidate_fraction(0.75) == 0.75
