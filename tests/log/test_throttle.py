"""The rate-limited log line: one line per key and interval, the rest counted."""

from __future__ import annotations

import logging

import pytest

from coalmine.log.throttle import ThrottledLog


def test_one_line_per_key_and_interval_and_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("t"), 10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t")
    assert throttled.warning("a", "bad %s", 1)
    assert not throttled.warning("a", "bad %s", 2)
    assert not throttled.warning("a", "bad %s", 3)
    assert throttled.warning("b", "other")  # keys are limited apart
    now[0] += 10.0
    assert throttled.warning("a", "bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "other",
        "bad 4 (2 more like it since the last such line, not logged)",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}
