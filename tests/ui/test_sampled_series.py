"""Charts of a log whose production rows were sampled show calls, not logged rows."""

from __future__ import annotations

import pytest

from coalmine.ui.series import Call, share_series, totals


def test_a_sampled_production_row_counts_for_the_calls_it_stands_for() -> None:
    # a 5% canary with production logged at 10%: 5 canary rows, 9.5 -> 10 production rows
    # of weight 10 in a bucket; the logged rows say 33%, the calls 5%
    calls = [Call(100.0 + i, "candidate", 20.0, False) for i in range(5)]
    calls += [Call(100.0 + i, "production", 10.0, i == 0, 10.0) for i in range(10)]
    share = share_series(calls, 100.0, 60.0, part="candidate", whole=("candidate", "production"))
    assert share.y == [pytest.approx(5 / 105)]
    t = totals(calls)
    assert t["production"]["n"] == 100.0 and t["candidate"]["n"] == 5.0
    assert t["production"]["error_rate"] == pytest.approx(0.1)  # of the rows: a subsample
