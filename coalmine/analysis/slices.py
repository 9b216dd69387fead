"""Which slice values are tracked and which are judged (pure; O(capacity) memory).

A slice is one value of a slice attribute ("region=eu"). Their number is unbounded (a user id
as an attribute), so memory and the multiplicity budget need a bound; the old rule — the
first `max_slices` values *seen* — missed a large regressed slice that happened to show up
late. Here:

- **Tracked**: a space-saving sketch (Metwally, Agrawal & El Abbadi 2005) counts the rows of
  at most `capacity` slice values (4 × max_slices by default); a new value replaces the
  tracked value with the fewest rows (its statistics restart, its count is inherited + 1,
  as the sketch prescribes). Any value with more than 1/capacity of the slice rows is
  always tracked.
- **Judged**: at each look, free judging slots (`max_slices` in all) go to the tracked values
  with the MOST rows among those with at least `min_rows`, largest first. An admitted slice
  is judged for the rest of the analysis and never evicted, so at most `max_slices` slices
  are ever judged: the multiplicity budget (weighted Holm, see family.py) has a fixed size.

Why α still holds: which slices are judged depends only on how many rows (requests) each
value had — never on errors, labels or any outcome. Conditional on the sequence of slice
values (the traffic), the judged family is fixed, each slice's confidence sequence is
anytime-valid from any time chosen that way (Ville: uniformly over time), and the family has
at most `max_slices` slice members, as the budget assumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MIN_ROWS", "SlicePool"]

MIN_ROWS = 50  # rows (both arms) a slice value needs before it may take a judging slot


class SlicePool:
    def __init__(self, max_judged: int, capacity: int | None = None) -> None:
        self.max_judged = max_judged
        self.capacity = 0 if max_judged == 0 else capacity or max(4 * max_judged, max_judged + 20)
        self.counts: dict[str, int] = {}  # tracked value → rows (space-saving estimate)
        self.judged: list[str] = []  # sorted; never shrinks
        self._judged: set[str] = set()
        self.rows = 0  # (row, slice value) pairs seen, tracked or not
        # The evictable (tracked, not judged) values by count, and the smallest count: the
        # stream-summary of space-saving, so a new value costs O(1) even when every row
        # brings one (a user id as an attribute).
        self._by_count: dict[int, dict[str, None]] = {}
        self._min = 0

    def _bucket_add(self, key: str, n: int) -> None:
        self._by_count.setdefault(n, {})[key] = None
        if n < self._min or len(self._by_count) == 1:
            self._min = n

    def _bucket_remove(self, key: str, n: int) -> None:
        bucket = self._by_count[n]
        del bucket[key]
        if not bucket:
            del self._by_count[n]
            if n == self._min and self._by_count:
                self._min = min(self._by_count) if n + 1 not in self._by_count else n + 1

    def track(self, key: str, rows: int) -> None:
        """Start tracking `key` with `rows` rows (a state saved before the pool existed)."""
        self.counts[key] = rows
        self._bucket_add(key, rows)

    def see(self, key: str) -> tuple[bool, str | None]:
        """Count one row of `key`: (is it tracked now, the value evicted to make room)."""
        self.rows += 1
        n = self.counts.get(key)
        if n is not None:
            self.counts[key] = n + 1
            if key not in self._judged:
                self._bucket_add(key, n + 1)
                self._bucket_remove(key, n)
            return True, None
        if len(self.counts) < self.capacity:
            self.counts[key] = 1
            self._bucket_add(key, 1)
            return True, None
        if not self._by_count:  # every tracked value is judged (capacity == max_judged)
            return False, None
        victim = next(iter(self._by_count[self._min]))  # the oldest with the fewest rows
        inherited = self.counts.pop(victim)
        self._bucket_remove(victim, inherited)
        self.counts[key] = inherited + 1
        self._bucket_add(key, inherited + 1)
        return True, victim

    def admit(self, min_rows: int = MIN_ROWS) -> list[str]:
        """Fill free judging slots with the largest tracked values; the newly admitted."""
        free = self.max_judged - len(self.judged)
        if free <= 0:
            return []
        waiting = [k for k, n in self.counts.items() if k not in self._judged and n >= min_rows]
        waiting.sort(key=lambda k: (-self.counts[k], k))
        new = waiting[:free]
        self.judged = sorted(self.judged + new)  # one order, however the looks fell
        self._judged.update(new)
        for k in new:  # judged values are never evicted
            self._bucket_remove(k, self.counts[k])
        return new

    def unjudged_rows(self) -> int:
        """Slice rows outside the judged slices (those slices are judged on all traffic only)."""
        return max(self.rows - sum(self.counts.get(k, 0) for k in self.judged), 0)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "judged": self.judged, "rows": self.rows,
                "capacity": self.capacity}  # fmt: skip

    @classmethod
    def from_dict(cls, max_judged: int, d: Mapping[str, Any]) -> SlicePool:
        pool = cls(max_judged, int(d.get("capacity") or 0) or None)
        pool.judged = [str(k) for k in d["judged"]]
        pool._judged = set(pool.judged)
        for k, v in d["counts"].items():
            pool.counts[str(k)] = int(v)
            if k not in pool._judged:
                pool._bucket_add(str(k), int(v))
        pool.rows = int(d["rows"])
        return pool
