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
