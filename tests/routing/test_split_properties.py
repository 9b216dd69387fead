"""Property tests (hypothesis) of the routing math: stickiness, the monotone ramp, the
baseline's share, and shares that match the weights — over any keys, salts and weights."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.routing.split import (
    BUCKETS,
    assign,
    baseline_share,
    bucket_of,
    candidate_fraction,
    mirror_sampled,
    route,
)

keys = st.text(min_size=0, max_size=40)
salts = st.text(min_size=0, max_size=20)
weights = st.integers(min_value=0, max_value=BUCKETS)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(key=keys, salt=salts, w=weights, seed=st.integers(0, 2**32 - 1))
def test_a_key_is_sticky_whatever_else_happens(key: str, salt: str, w: int, seed: int) -> None:
    first = route(key, salt, w, random.Random(seed))
    again = route(key, salt, w, random.Random(seed + 1))  # another request, another process
    assert first == again
    assert 0 <= bucket_of(key, salt) < BUCKETS


@settings(max_examples=300, deadline=None, derandomize=True)
@given(key=keys, salt=salts, ramp=st.lists(weights, min_size=2, max_size=8))
def test_raising_the_weight_never_moves_a_canary_user_back(
    key: str, salt: str, ramp: list[int]
) -> None:
    ramp = sorted(ramp)
    roles = [route(key, salt, w, random.Random(0)) for w in ramp]
    if "canary" in roles:
        first = roles.index("canary")
        assert all(r == "canary" for r in roles[first:])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(key=keys, salt=salts, canary=weights, base=weights)
def test_with_a_baseline_a_canary_user_stays_and_stable_only_loses_users(
    key: str, salt: str, canary: int, base: int
) -> None:
    base = min(base, BUCKETS - canary)  # the controller never gives away more than all
    bucket = bucket_of(key, salt)
    role = assign(bucket, canary, base)
    assert assign(bucket, canary, 0) != "canary" or role == "canary"
    wider = assign(bucket, min(BUCKETS, canary + 1), max(0, min(base, BUCKETS - canary - 1)))
    if role == "canary":
        assert wider == "canary"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(share=st.floats(min_value=0.0, max_value=1.0))
def test_the_baseline_gets_the_canary_share_as_far_as_traffic_allows(share: float) -> None:
    base = baseline_share(share)
    assert 0.0 <= base <= min(share, 1.0 - share) + 1e-12
    assert share + base <= 1.0 + 1e-12
    if 0 < share < 1:
        assert 0.5 - 1e-12 <= candidate_fraction(share) <= 1.0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(w=st.integers(min_value=100, max_value=BUCKETS - 100), salt=salts)
def test_the_observed_share_matches_the_weight(w: int, salt: str) -> None:
    n = 20_000
    on_canary = sum(route(f"user-{i}", salt, w, random.Random(0)) == "canary" for i in range(n))
    p = w / BUCKETS
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(on_canary - n * p) <= 5 * sd  # 5σ: a false alarm about once in 3.5 million


@settings(max_examples=40, deadline=None, derandomize=True)
@given(bp=st.integers(min_value=0, max_value=BUCKETS), seed=st.integers(0, 2**32 - 1))
def test_the_mirror_samples_its_share(bp: int, seed: int) -> None:
    rng = random.Random(seed)
    n = 5_000
    copied = sum(mirror_sampled(rng, bp) for _ in range(n))
    p = bp / BUCKETS
    assert abs(copied - n * p) <= 5 * (n * p * (1 - p)) ** 0.5
