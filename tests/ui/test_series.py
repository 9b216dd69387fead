from coalmine.ui.failure import matches_slice, parse_slice
from coalmine.ui.series import (
    Call,
    agrees,
    bucket_width,
    class_distribution,
    is_error,
    latency_error_series,
    point_value,
    quantile,
    rate_series,
    resource_series,
    resource_totals,
    share_series,
)


def test_point_value_reads_every_server_shape() -> None:
    assert point_value(3) == 3
    assert point_value([3]) == 3
    assert point_value({"predictions": [3], "probabilities": [[0.1, 0.9]]}) == 3
    assert point_value({"prediction": "cat", "probabilities": {"cat": 0.8}}) == "cat"
    assert point_value({"outputs": [{"name": "predict_proba", "data": [0.2]},
                                    {"name": "predict", "data": [7]}]}) == 7  # fmt: skip
    assert point_value({"weird": 1}) == {"weird": 1}


def test_agreement_of_classes_and_numbers() -> None:
    assert agrees({"predictions": [1]}, [1])
    assert not agrees({"predictions": [1]}, {"predictions": [2]})
    assert agrees(0.3, 0.3 + 1e-12)
    assert not agrees(0.3, 0.31)
    assert not agrees(True, 1.5)


def test_quantile_and_bucket_width() -> None:
    assert quantile([], 0.5) is None
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([5.0], 0.95) == 5.0
    assert bucket_width(60) == 1.0
    assert bucket_width(600) == 10.0
    assert bucket_width(3600 * 24) == 1800.0


def test_errors_are_the_versions_fault_only() -> None:
    assert is_error(0, "connection") and is_error(504, "timeout") and is_error(503, None)
    assert not is_error(400, "http_4xx") and not is_error(200, None)


def test_series_per_bucket() -> None:
    calls = [Call(100.0 + i, "production", 10.0 + i, i == 3) for i in range(4)]
    calls += [Call(100.5, "candidate", 50.0, True)]
    series = latency_error_series(calls, start=100.0, width=2.0)
    assert series["production"]["p50"].x == [100.0, 102.0]
    assert series["production"]["p50"].y == [10.5, 12.5]
    assert series["production"]["error_rate"].y == [0.0, 0.5]
    assert series["candidate"]["error_rate"].y == [1.0]
    share = share_series(calls, 100.0, 2.0, part="candidate", whole=("candidate", "production"))
    assert share.y == [1 / 3, 0.0] and share.n == [3, 2]
    agreement = rate_series([(100.0, True), (100.1, False), (103.0, True)], 100.0, 2.0)
    assert agreement.y == [0.5, 1.0]


def test_class_distribution_keeps_the_most_common() -> None:
    dist = class_distribution([[1], [1], [2], [3]], limit=2)
    assert dist == {"1": 0.5, "2": 0.25, "other": 0.25}


def test_slices_parse_the_engines_names() -> None:
    assert parse_slice(None) is None and parse_slice("overall") is None
    assert parse_slice("region=north") == {"region": "north"}
    assert parse_slice("region=north,device=ios") == {"region": "north", "device": "ios"}
    assert matches_slice({"region": "north", "device": "ios"}, {"region": "north"})
    assert not matches_slice({"region": "south"}, {"region": "north"})
    assert matches_slice({}, None)


def test_resource_series_has_one_point_per_window_per_version() -> None:
    """Each judgement repeats every version's newest window until the next closes: a point
    per window, at the judgement that first carried it; a new phase's evaluator counts
    from 1 again, and its first window is still a new point."""

    def w(n: int, cpu: float, mb: float) -> dict[str, float]:
        return {"windows": n, "cpu_ms_per_request": cpu, "memory_mb": mb}

    judgements = [
        (1.0, {"verdict": "inconclusive"}),  # no resource source, or no window yet
        (2.0, {"resources": {"v1": w(1, 0.8, 90.0)}}),
        (3.0, {"resources": {"v1": w(1, 0.8, 90.0), "v2": w(1, 1.6, 95.0)}}),
        (4.0, {"resources": {"v1": w(2, 0.7, 91.0), "v2": w(1, 1.6, 95.0)}}),
        (5.0, {"resources": {"v1": w(1, 0.9, 92.0), "v2": w(1, 1.8, 130.0)}}),  # canary
        (6.0, None),
        (7.0, {"resources": {"v2": w(2, float("nan"), 140.0)}}),
    ]
    series = resource_series(judgements)
    assert list(series) == ["v1", "v2"]
    assert series["v1"]["cpu"].x == [2.0, 4.0, 5.0]
    assert series["v1"]["cpu"].y == [0.8, 0.7, 0.9]
    assert series["v1"]["memory"].n == [1, 2, 1]
    assert series["v2"]["memory"].x == [3.0, 5.0, 7.0]
    assert series["v2"]["cpu"].y == [1.6, 1.8, None]  # not finite: drawn as a gap
    totals = resource_totals(series)
    assert totals["v2"]["memory_peak"] == 140.0 and totals["v2"]["cpu_last"] == 1.8
    assert totals["v1"]["windows"] == 3 and abs(totals["v1"]["cpu_mean"] - 0.8) < 1e-9
