"""The lease rules (coalmine.rollout.lease) with literal inputs, and simulated: any history
of takes, renewals and fenced writes by several controllers, in any order the database
serialises them, keeps the token growing and lets at most one holder's writes commit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.rollout.lease import (
    Fence,
    LeaseRow,
    LeaseSettings,
    attempt,
    fenced,
    local_deadline,
    settings_for,
)

FREE = LeaseRow(None, 0, 0.0)
TTL = 3.0


def test_a_free_lease_is_taken_with_the_next_token() -> None:
    assert attempt(FREE, "a", None, 10.0, TTL) == LeaseRow("a", 1, 13.0)


def test_a_held_lease_is_refused_to_another_until_it_expires() -> None:
    held = LeaseRow("a", 1, 13.0)
    assert attempt(held, "b", None, 12.9, TTL) is None
    assert attempt(held, "b", None, 13.0, TTL) == LeaseRow("b", 2, 16.0)


def test_the_holder_renews_with_the_same_token() -> None:
    held = LeaseRow("a", 1, 13.0)
    assert attempt(held, "a", 1, 12.0, TTL) == LeaseRow("a", 1, 15.0)
    # past the expiry too, while nobody took it: nobody wrote in between
    assert attempt(held, "a", 1, 20.0, TTL) == LeaseRow("a", 1, 23.0)


def test_a_superseded_holder_cannot_renew_its_old_token() -> None:
    taken = LeaseRow("b", 2, 16.0)
    assert attempt(taken, "a", 1, 14.0, TTL) is None
    # it may take the lease afresh once expired, with a new token
    assert attempt(taken, "a", 1, 16.5, TTL) == LeaseRow("a", 3, 19.5)


def test_a_restarted_holder_without_its_token_waits_for_the_expiry() -> None:
    # same name, lost its memory (a restart is a new holder anyway): no renewal
    assert attempt(LeaseRow("a", 1, 13.0), "a", None, 12.0, TTL) is None


def test_fenced_needs_the_holder_the_token_and_an_unexpired_lease() -> None:
    row = LeaseRow("a", 4, 13.0)
    assert fenced(row, Fence("controller", "a", 4), 12.9)
    assert not fenced(row, Fence("controller", "a", 4), 13.0)  # ran out
    assert not fenced(row, Fence("controller", "a", 3), 12.0)  # an older holding
    assert not fenced(row, Fence("controller", "b", 4), 12.0)


def test_the_local_belief_ends_before_the_databases_expiry() -> None:
    s = LeaseSettings(ttl_s=3.0, renew_s=1.0, safety_s=0.5)
    # sent at local 100.0; the database stamped its now (>= the send) + ttl
    assert local_deadline(100.0, s) == 102.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttl_s": 0.0}, "lease_ttl_s"),
        ({"ttl_s": 3.0, "renew_s": 2.8}, "lease_renew_s"),
        ({"ttl_s": 3.0, "renew_s": 0.0}, "lease_renew_s"),
    ],
)
def test_settings_that_would_let_the_lease_lapse_are_refused(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        LeaseSettings(**kwargs)


def test_settings_for_a_config_block() -> None:
    s = settings_for(3.0, 1.0)
    assert (s.ttl_s, s.renew_s, s.poll_s, s.safety_s) == (3.0, 1.0, 0.5, 0.5)
    small = settings_for(1.0, 0.5)
    assert small.safety_s == 0.25 and small.renew_s < small.ttl_s - small.safety_s


# -- simulation ------------------------------------------------------------------------------

HOLDERS = ("a", "b", "c")
# one step of a history: who acts, what it does, how far the database clock moves first
STEPS = st.lists(
    st.tuples(
        st.sampled_from(HOLDERS),
        st.sampled_from(("attempt", "write", "forget")),
        st.floats(min_value=0.0, max_value=2.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(STEPS)
def test_any_history_keeps_one_writer_at_a_time_and_the_token_growing(
    steps: list[tuple[str, str, float]],
) -> None:
    row, now = FREE, 0.0
    mine: dict[str, int | None] = dict.fromkeys(HOLDERS)
    writes: list[tuple[float, str, int]] = []
    for who, what, dt in steps:
        now += dt
        if what == "attempt":
            after = attempt(row, who, mine[who], now, TTL)
            if after is None:
                mine[who] = None
            else:
                assert after.token >= row.token  # the token only grows
                assert after.token in (row.token, row.token + 1)
                row, mine[who] = after, after.token
        elif what == "forget":  # a crash and restart: the token is gone from memory
            mine[who] = None
        else:
            token = mine[who]
            if token is not None and fenced(row, Fence("c", who, token), now):
                writes.append((now, who, token))
        # at any database instant, at most one holder's fence passes
        passing = [
            h
            for h in HOLDERS
            if mine[h] is not None and fenced(row, Fence("c", h, mine[h] or 0), now)
        ]
        assert len(passing) <= 1
    # writes commit in token order: after a newer holder wrote, an older one never does
    tokens = [t for _, _, t in writes]
    assert tokens == sorted(tokens)
    # one token, one holder
    assert len({(t, w) for _, w, t in writes}) == len({t for _, _, t in writes})


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(min_value=0.0, max_value=TTL * 0.99), min_size=1, max_size=40))
def test_a_holder_renewing_within_the_ttl_is_never_taken_over(gaps: list[float]) -> None:
    row, now = attempt(FREE, "a", None, 0.0, TTL), 0.0
    assert row is not None
    for gap in gaps:
        now += gap
        assert attempt(row, "b", None, now, TTL) is None  # the follower's poll is refused
        renewed = attempt(row, "a", 1, now, TTL)
        assert renewed is not None and renewed.token == 1
        row = renewed
