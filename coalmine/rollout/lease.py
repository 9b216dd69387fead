"""The controller's leader lease as pure rules: who may lead, and for how long.

One row per lease name (`leases` table): the holder, a fencing token and the expiry. The
rules here are what the SQL in coalmine.rollout.leader does in ONE conditional UPDATE each,
written once more in Python so they can be tested with literal inputs and simulated:

- `attempt`: a controller takes or renews the lease. It renews while it still holds its
  token; it takes the lease only once the row has expired, and then the token grows by one.
  The token therefore only ever grows, and each holding of the lease has its own token.
- `fenced`: the check every transition's transaction makes (the same holder and token, not
  expired). A leader that was superseded (its token is gone) or whose lease ran out can
  never pass it again, whatever it believes.

Clocks. Expiry is written and compared by the DATABASE's clock only (`now` below is the
database's time when the statement runs), so controllers' clocks are never compared with
each other and skew between machines does not matter. A controller believes it leads until
`local_deadline`: its own monotonic clock, started BEFORE it sent the renewal, plus the TTL
less a safety margin. The database stamped the expiry after that start, so the local belief
ends first (clock rates are assumed equal over a few seconds, not clocks). That belief only
saves work and gates webhook POSTs; safety rests on `fenced`, checked by the database.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Fence",
    "LeaseRow",
    "LeaseSettings",
    "attempt",
    "fenced",
    "local_deadline",
    "settings_for",
]


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One stored lease (`holder` None: never taken). A release keeps holder and token and
    only ends the expiry, so the next take still grows the token."""

    holder: str | None
    token: int
    expires_at: float  # database clock, epoch seconds


@dataclass(frozen=True, slots=True)
class Fence:
    """What a leader's writes carry: they commit only while this is still the lease."""

    name: str
    holder: str
    token: int
    ttl_s: float = 3.0  # the lease's TTL: how long a fenced transaction may sit idle


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """ttl_s: how long a lease lasts after its last renewal (a dead leader's successor
    waits at most this long, plus one poll); renew_s: how often the leader renews;
    poll_s: how often a follower tries to take it; safety_s: how much sooner than the
    database's expiry a leader stops believing it leads."""

    ttl_s: float = 3.0
    renew_s: float = 1.0
    poll_s: float = 0.5
    safety_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError("lease_ttl_s: must be above 0")
        if not 0 < self.renew_s < self.ttl_s - self.safety_s:
            raise ValueError(
                "lease_renew_s: must be above 0 and below lease_ttl_s less the safety "
                f"margin ({self.ttl_s - self.safety_s:g}s), or the lease lapses between renewals"
            )
        if not self.poll_s > 0:
            raise ValueError("lease poll: must be above 0")
        if not 0 <= self.safety_s < self.ttl_s:
            raise ValueError("lease safety margin: must be in [0, ttl)")


def settings_for(ttl_s: float, renew_s: float) -> LeaseSettings:
    """The settings of a config's `controller:` block: a follower polls as often as the
    leader renews (at most every 0.5 s), and the safety margin is a quarter of the TTL (at
    most 0.5 s)."""
    return LeaseSettings(
        ttl_s=ttl_s, renew_s=renew_s, poll_s=min(0.5, renew_s), safety_s=min(0.5, ttl_s / 4)
    )


def attempt(row: LeaseRow, me: str, mine: int | None, now: float, ttl: float) -> LeaseRow | None:
    """The row after `me` (holding token `mine`, None if none) tries to take or renew the
    lease at database time `now`; None when refused (someone else holds it, unexpired)."""
    renewing = mine is not None and row.holder == me and row.token == mine
    if not renewing and row.expires_at > now:
        return None
    # renewing keeps the token even past expiry: nobody took the lease in between (the
    # token would have grown), so no other leader's writes can be interleaved with ours
    return LeaseRow(me, row.token if renewing else row.token + 1, now + ttl)


def fenced(row: LeaseRow, fence: Fence, now: float) -> bool:
    """True when a write carrying `fence` may commit at database time `now`."""
    return row.holder == fence.holder and row.token == fence.token and row.expires_at > now


def local_deadline(sent_at: float, settings: LeaseSettings) -> float:
    """Until when (on the caller's monotonic clock) a holder believes it leads, after a
    successful take or renewal whose statement it sent at `sent_at` (same clock)."""
    return sent_at + settings.ttl_s - settings.safety_s
