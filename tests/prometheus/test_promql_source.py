"""The PromQL source's client against the real Prometheus server: one number, or no data
(an empty vector), or a QueryError with the server's reason — never a guess."""

from __future__ import annotations

import pytest

from coalmine.analysis.sources.promql import PrometheusQuery, QueryError
from tests.prometheus.conftest import PrometheusServer


def test_answers_of_the_real_server(prometheus: PrometheusServer) -> None:
    client = PrometheusQuery(prometheus.url, timeout_s=5)
    assert client.value("vector(2.5)") == 2.5
    assert client.value("scalar(vector(3))") == 3.0
    assert client.value('up{job="no-such-job"}') is None  # an empty vector: no data
    assert client.value("vector(0) / vector(0)") is None  # NaN: no data either
    two = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
    with pytest.raises(QueryError, match="2 series; aggregate"):
        client.value(two)
    with pytest.raises(QueryError, match=r"refused the query: .*parse error"):
        client.value("sum(")


def test_an_unreachable_server_is_an_error_not_a_value() -> None:
    with pytest.raises(QueryError, match="cannot reach"):
        PrometheusQuery("http://127.0.0.1:9", timeout_s=1).value("vector(1)")
    with pytest.raises(ValueError, match="http"):
        PrometheusQuery("file:///etc/passwd")
