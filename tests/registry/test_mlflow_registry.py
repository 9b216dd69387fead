"""MlflowRegistry against a real local MLflow store: resolve, serve, promote, roll back."""

from __future__ import annotations

from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest

from coalmine.modelserver import start_model_server
from coalmine.registry import (
    ModelVersionRef,
    RegistryError,
    make_registry,
    prepare_candidate,
)
from coalmine.registry.mlflow_registry import MlflowRegistry

from .conftest import Store

pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed")


@pytest.fixture(scope="module")
def registry(store: Store, tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    reg = make_registry("mlflow", tracking_uri=store.uri, cache_dir=tmp_path_factory.mktemp("c"))
    assert isinstance(reg, MlflowRegistry)
    return reg


def _predicts_like(path: Path, store: Store, name: str, version: str) -> None:
    estimator = joblib.load(path)
    expected = store.estimators[(name, version)].predict(store.x)
    assert type(estimator) is type(store.estimators[(name, version)])
    np.testing.assert_array_equal(estimator.predict(store.x), expected)


def test_resolves_a_version_to_a_joblib_file(registry: MlflowRegistry, store: Store) -> None:
    resolved = registry.resolve("models:/iris/1")  # saved with skops, MLflow's default
    assert (resolved.name, resolved.version, resolved.candidate) == ("iris", "1", "iris-1")
    assert resolved.source_uri == "models:/iris/1" and resolved.local_path.suffix == ".joblib"
    _predicts_like(resolved.local_path, store, "iris", "1")


def test_resolves_an_alias_and_latest(registry: MlflowRegistry, store: Store) -> None:
    by_alias = registry.resolve("models:/iris@challenger")  # cloudpickle
    assert (by_alias.version, by_alias.source_uri) == ("2", "models:/iris@challenger")
    _predicts_like(by_alias.local_path, store, "iris", "2")
    assert registry.resolve("models:/iris/latest").version == "2"


def test_resolving_twice_reuses_the_export(registry: MlflowRegistry) -> None:
    first = registry.resolve("models:/iris/2")
    stamp = first.local_path.stat().st_mtime_ns
    again = registry.resolve("models:/iris@challenger")
    assert again.local_path == first.local_path
    assert again.local_path.stat().st_mtime_ns == stamp
    # no half-written downloads left behind
    assert [p.name for p in first.local_path.parent.iterdir()] == ["model.joblib"]


def test_the_export_is_served_by_serve_model(registry: MlflowRegistry, store: Store) -> None:
    resolved = registry.resolve("models:/iris@challenger")
    rows = store.x[::30].tolist()
    with start_model_server(resolved.local_path, name="iris", version=resolved.candidate) as srv:
        response = httpx.post(
            f"{srv.url}/v1/models/iris:predict", json={"instances": rows}, timeout=10
        )
        meta = httpx.get(f"{srv.url}/v1/models/iris", timeout=10).json()
    assert response.status_code == 200
    expected = store.estimators[("iris", "2")].predict(np.asarray(rows)).tolist()
    assert response.json()["predictions"] == expected
    assert "iris-2" in str(meta)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("models:/nope/1", "no registered model named 'nope'"),
        ("models:/iris/9", "registered model 'iris' has no version 9"),
        ("models:/iris@nope", "registered model 'iris' has no alias 'nope'"),
        ("models:/iris/Staging", "not a version number"),
    ],
)
def test_unknown_models_versions_and_aliases_are_clear_errors(
    registry: MlflowRegistry, uri: str, reason: str
) -> None:
    with pytest.raises(RegistryError) as err:
        registry.resolve(uri)
    assert err.value.subject == uri and reason in err.value.reason


def test_a_model_without_the_sklearn_flavour_is_refused(
    registry: MlflowRegistry, store: Store, tmp_path: Path
) -> None:
    # a pyfunc-only model directory, registered as a version like any other
    model_dir = tmp_path / "pyfunc-model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: my_loader\n"
    )
    client = store.client()
    client.create_registered_model("pyfunc-only")
    client.create_model_version("pyfunc-only", source=str(model_dir))
    with pytest.raises(RegistryError, match="no 'sklearn' flavour \\(flavours: python_function"):
        registry.resolve("models:/pyfunc-only/1")


def test_promotion_moves_champion_and_tags_idempotently(
    registry: MlflowRegistry, store: Store
) -> None:
    store.log("churn", store.estimators[("iris", "1")], "cloudpickle")
    store.log("churn", store.estimators[("iris", "2")], "cloudpickle")
    assert registry.champion("churn") is None
    registry.on_promoted(ModelVersionRef("churn", "1"), 11, "promoted: all steps passed")
    assert registry.champion("churn") == ModelVersionRef("churn", "1")
    for _ in range(2):  # a retried promotion changes nothing
        registry.on_promoted(ModelVersionRef("churn", "2"), 12, "accuracy +1.2 pts (CI 0.4..2.0)")
    assert registry.champion("churn") == ModelVersionRef("churn", "2")
    tags = store.client().get_model_version("churn", "2").tags
    assert tags["coalmine.outcome"] == "promoted"
    assert tags["coalmine.reason"] == "accuracy +1.2 pts (CI 0.4..2.0)"
    assert tags["coalmine.rollout_id"] == "12"
    # MLflow keeps one version per alias: the old champion no longer holds it
    assert "champion" not in store.client().get_model_version("churn", "1").aliases


def test_rollback_tags_the_reason_and_leaves_aliases(
    registry: MlflowRegistry, store: Store
) -> None:
    v = store.log("fraud", store.estimators[("iris", "1")], "cloudpickle")
    registry.on_promoted(ModelVersionRef("fraud", v), 1, "first")
    bad = store.log("fraud", store.estimators[("iris", "2")], "cloudpickle")
    reason = "accuracy -5.1 pts vs stable (CI -7.0..-3.2), FAIL at canary 5%" + "!" * 5000
    for _ in range(2):
        registry.on_rolled_back(ModelVersionRef("fraud", bad), 7, reason)
    tags = store.client().get_model_version("fraud", bad).tags
    assert tags["coalmine.outcome"] == "rolled_back"
    assert tags["coalmine.rollout_id"] == "7"
    assert tags["coalmine.reason"].startswith("accuracy -5.1 pts vs stable")
    assert tags["coalmine.reason"].endswith("[truncated]")  # long reasons fit MLflow's cap
    assert registry.champion("fraud") == ModelVersionRef("fraud", v)


def test_outcomes_for_unknown_versions_are_clear_errors(registry: MlflowRegistry) -> None:
    with pytest.raises(RegistryError, match="models:/iris/99: no such registered model version"):
        registry.on_rolled_back(ModelVersionRef("iris", "99"), 1, "x")
    with pytest.raises(RegistryError, match="models:/ghost/1"):
        registry.on_promoted(ModelVersionRef("ghost", "1"), 1, "x")


def test_links_find_the_version_and_move_with_a_reused_name(
    registry: MlflowRegistry, store: Store
) -> None:
    first = prepare_candidate(registry, "models:/iris/1", model="iris-prod")
    assert first.candidate == "iris-1"
    assert registry.find("iris-prod", "iris-1") == ModelVersionRef("iris", "1")
    assert registry.find("iris-prod", "iris-2") is None
    assert registry.find("other", "iris-1") is None
    # a pipeline naming its candidates itself ("nightly") relinks the name to the new version
    prepare_candidate(registry, "models:/iris/1", model="iris-prod", candidate="nightly")
    renamed = prepare_candidate(registry, "models:/iris@challenger", "iris-prod", "nightly")
    assert renamed.candidate == "nightly" and renamed.version == "2"
    assert registry.find("iris-prod", "nightly") == ModelVersionRef("iris", "2")
    tags = store.client().get_model_version("iris", "1").tags
    assert "coalmine.candidate" not in tags
