"""Real model servers for the HA process tests: v1 and v2 good iris classifiers, bad one
that answers from the sepal features only (about 15 points less accurate)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from coalmine.testing import serve_estimator
from tests.rollout.conftest import IRIS_X, IRIS_Y


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("ha-models")
    good = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)
    good2 = LogisticRegression(C=0.5, max_iter=500).fit(IRIS_X, IRIS_Y)
    bad = make_pipeline(
        ColumnTransformer([("sepal", "passthrough", [0, 1])]), LogisticRegression(max_iter=500)
    ).fit(IRIS_X, IRIS_Y)
    with (
        serve_estimator(good, "iris", "v1", log_dir=logs) as v1,
        serve_estimator(good2, "iris", "v2", log_dir=logs) as v2,
        serve_estimator(bad, "iris", "bad", log_dir=logs) as worse,
    ):
        yield {"v1": v1.url, "v2": v2.url, "bad": worse.url}
