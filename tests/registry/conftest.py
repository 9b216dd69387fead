"""A real local MLflow registry (SQLite backend, artefacts on disk), shared per module.

MLflow's first import and its schema migrations take seconds, so one store is built for the
session and every test writes to registered-model names of its own.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

# no usage reports from test runs (MLflow reads this when it is first imported)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@dataclass
class Store:
    """The store's URI, the estimators behind each version, and helpers to add versions."""

    uri: str
    root: Path
    x: np.ndarray
    estimators: dict[tuple[str, str], Any]

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def log(self, name: str, estimator: Any, serialization_format: str) -> str:
        """Log and register one sklearn model the way a pipeline does; its version."""
        import mlflow
        import mlflow.sklearn

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow's own deprecation chatter
                info = mlflow.sklearn.log_model(
                    estimator,
                    name="model",
                    registered_model_name=name,
                    serialization_format=serialization_format,
                    # explicit requirements: skips MLflow's slow inference subprocess
                    pip_requirements=["scikit-learn"],
                )
        finally:
            mlflow.set_tracking_uri(previous)
        version = str(info.registered_model_version)
        self.estimators[(name, version)] = estimator
        return version


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """`iris` v1 (LogisticRegression, skops, MLflow's default format) and v2 (decision tree,
    cloudpickle), alias `challenger` -> 2. Skips when the 'mlflow' extra is missing."""
    mlflow = pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    x, y = load_iris(return_X_y=True)
    s = Store(uri=uri, root=root, x=x, estimators={})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # artefacts under tmp: the default location is ./mlruns in the working directory
            client = s.client()
            client.create_experiment("coalmine-tests", artifact_location=(root / "art").as_uri())
            mlflow.set_experiment("coalmine-tests")
    finally:
        mlflow.set_tracking_uri(previous)
    s.log("iris", LogisticRegression(max_iter=500).fit(x, y), "skops")
    s.log("iris", DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y), "cloudpickle")
    s.client().set_registered_model_alias("iris", "challenger", "2")
    yield s
