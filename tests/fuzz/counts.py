"""What the fuzzers did in this run (filled by the tests, printed by conftest.py)."""

from collections import Counter

COUNTS: Counter[str] = Counter()
