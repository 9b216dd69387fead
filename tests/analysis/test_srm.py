"""The sample-ratio-mismatch e-value (coalmine.analysis.sequential.srm), by seeded simulation.

False alarm ≤ α (upper Clopper–Pearson bound) with the configured share, at the edge of the
tolerance, and across a ramp of shares; detection of a share lost to a third and of a broken
split (a sticky key that sends everyone one way).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from coalmine.analysis.sequential.simulation import clopper_pearson
from coalmine.analysis.sequential.srm import DEFAULT_TOLERANCE, SampleRatioTest

ALPHA = 0.05
RUNS = 200


def first_alarm(
    shares_true: list[float], shares_cfg: list[float], per_look: int, looks: int,
    alpha: float, seed: int,
) -> int | None:  # fmt: skip
    """Requests seen at the first look where the test alarms (None: never); the steps of
    the ramp take equal shares of the looks."""
    rng = np.random.default_rng(seed)
    test = SampleRatioTest()
    for look in range(looks):
        k = look * len(shares_cfg) // looks
        c = int(rng.binomial(per_look, shares_true[k]))
        test.update(c, per_look - c, shares_cfg[k])
        if test.mismatch(alpha):
            return (look + 1) * per_look
    return None


def edge(share: float, odds: float) -> float:
    """The share whose odds are `odds` times those of `share`."""
    return share * odds / (share * odds + 1 - share)


@pytest.mark.parametrize(
    ("name", "true", "cfg"),
    [
        ("5% as configured", [0.05], [0.05]),
        ("1% as configured", [0.01], [0.01]),
        ("5% at the low edge of the tolerance", [edge(0.05, 1 / (1 + DEFAULT_TOLERANCE))], [0.05]),
        ("25% at the high edge", [edge(0.25, 1 + DEFAULT_TOLERANCE)], [0.25]),
        ("a ramp 1-5-25-50%", [0.01, 0.05, 0.25, 0.5], [0.01, 0.05, 0.25, 0.5]),
    ],
)
def test_false_alarm_is_at_most_alpha(name: str, true: list[float], cfg: list[float]) -> None:
    alarms = sum(
        first_alarm(true, cfg, per_look=500, looks=40, alpha=ALPHA, seed=seed) is not None
        for seed in range(RUNS)
    )
    upper = clopper_pearson(alarms, RUNS)[1]
    assert upper <= ALPHA, f"{name}: {alarms}/{RUNS} false alarms (upper bound {upper:.3f})"


@pytest.mark.parametrize(
    ("name", "true", "cfg", "within"),
    [
        ("5% configured, 3% seen", [0.03], [0.05], 100_000),
        (
            "5% configured, nobody routed (a sticky key hashing everyone alike)",
            [0.0],
            [0.05],
            1_000,
        ),
        ("50% configured, everybody routed", [1.0], [0.5], 200),
        ("a ramp whose 25% step stays at 5%", [0.01, 0.05, 0.05], [0.01, 0.05, 0.25], 60_000),
    ],
)
def test_a_mismatch_is_detected(
    name: str, true: list[float], cfg: list[float], within: int
) -> None:
    runs = 40
    found = [
        first_alarm(true, cfg, per_look=200, looks=math.ceil(within / 200), alpha=0.001, seed=s)
        for s in range(runs)
    ]
    detected = sum(n is not None for n in found)
    lower = clopper_pearson(detected, runs)[0]
    assert lower >= 0.9, f"{name}: detected in {detected}/{runs} within {within:,} requests"


def test_the_e_value_does_not_depend_on_how_requests_are_batched() -> None:
    one, many = SampleRatioTest(), SampleRatioTest()
    one.update(30, 970, 0.05)
    for c, o in ((10, 400), (0, 100), (20, 470)):
        many.update(c, o, 0.05)
    assert math.isclose(one.log_e_value, many.log_e_value, rel_tol=1e-9, abs_tol=1e-9)
    assert SampleRatioTest().e_value == 1.0


def test_summary_reports_what_was_seen_and_expected() -> None:
    test = SampleRatioTest()
    test.update(3, 97, 0.05)
    test.update(300, 700, 0.5)
    s = test.summary()
    assert (s.candidate, s.total, s.expected) == (303, 1100, 505.0)
    assert s.observed_share == pytest.approx(303 / 1100) and s.e_value > 1e6


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda t: t.update(-1, 3, 0.5), "candidate, other"),
        (lambda t: t.update(1, 3, 0.0), "share"),
        (lambda t: t.update(1, 3, 1.0), "share"),
        (lambda t: t.mismatch(1.5), "alpha"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call(SampleRatioTest())  # type: ignore[operator]
    with pytest.raises(ValueError, match="tolerance"):
        SampleRatioTest(tolerance=-1)
