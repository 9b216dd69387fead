from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from coalmine.modelserver import ModelServerHandle, start_model_server


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A classifier (numpy-fitted), a regressor, and (with pandas) a Pipeline fitted on a
    DataFrame, so it knows its feature names."""
    out = tmp_path_factory.mktemp("models")
    iris = load_iris()
    x, y = iris.data, iris.target
    classifier = LogisticRegression(max_iter=500).fit(x, y)
    regressor = LinearRegression().fit(x[:, :3], x[:, 3])
    estimators = {"iris": classifier, "reg": regressor}
    try:
        import pandas as pd
    except ImportError:  # pandas is optional; the feature-name tests skip without it
        pass
    else:
        frame = pd.DataFrame(x, columns=["sl", "sw", "pl", "pw"])
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        estimators["named"] = pipeline.fit(frame, y)
    paths = {}
    for key, estimator in estimators.items():
        paths[key] = out / f"{key}.joblib"
        joblib.dump(estimator, paths[key])
    return paths


@pytest.fixture(scope="module")
def iris_server(model_files: dict[str, Path]) -> Iterator[ModelServerHandle]:
    with start_model_server(model_files["iris"], name="iris", version="v7") as server:
        yield server
