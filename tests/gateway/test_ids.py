"""Request ids made by the gateway: valid UUIDv7s, unique, ordered by their millisecond."""

from __future__ import annotations

import random
import uuid

from coalmine.gateway.ids import time_ordered_id


def test_ids_are_uuid7_carrying_their_millisecond() -> None:
    rng = random.Random(7)
    ms = 1_764_000_000_123
    made = time_ordered_id(rng.getrandbits(80), ms)
    assert len(made) == 32 and made == made.lower()
    parsed = uuid.UUID(hex=made)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(made[:12], 16) == ms


def test_ids_are_unique_and_sort_by_time() -> None:
    rng = random.Random(11)
    ms0 = 1_764_000_000_000
    ids = [time_ordered_id(rng.getrandbits(80), ms0 + i // 100) for i in range(10_000)]
    assert len(set(ids)) == len(ids)
    # across milliseconds the order is the time order; within one it is random
    by_ms = [i[:12] for i in ids]
    assert by_ms == sorted(by_ms)
    assert sorted(ids) != ids  # the random part is not a counter


def test_made_ids_stay_unique_across_refills_of_the_random_pool() -> None:
    from coalmine.gateway.ids import new_request_id

    made = [new_request_id() for _ in range(2_000)]  # five refills of the 400-id pool
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(hex=m).version == 7 for m in made)
    assert len({m[12:] for m in made}) == len(made)  # the random parts differ too
