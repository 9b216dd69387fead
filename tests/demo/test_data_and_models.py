"""The demo's data and models tell the story the demo needs, offline and deterministically."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from coalmine.demo.data import REGIONS, DemoData, load_demo_data
from coalmine.demo.train import BAD_REGION, DemoModels, train_demo_models


@pytest.fixture(scope="module")
def data() -> DemoData:
    return load_demo_data()


@pytest.fixture(scope="module")
def models(data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    return train_demo_models(tmp_path_factory.mktemp("demo-models"), data)


def test_regions_are_deterministic_and_cover_every_sample(data: DemoData) -> None:
    again = load_demo_data()
    assert np.array_equal(data.region_pool, again.region_pool)
    assert set(np.unique(data.region_pool)) == set(REGIONS)
    shares = data.region_shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    # Named by size: the first region is the busiest.
    assert shares[REGIONS[0]] == max(shares.values())
    assert len(data.y_pool) > 500 and data.n_features == 64


def test_models_tell_the_intended_story(models: DemoModels) -> None:
    assert models.problems() == []
    v1, v2, v3 = (models.offline[v] for v in ("v1", "v2", "v3"))
    assert v2.overall > v1.overall + 0.05
    # v3 against v2 (production when v3 rolls out): overall within 3 points ...
    assert abs(v3.overall - v2.overall) < 0.03
    # ... but at least 10 points worse in one region, and only there.
    assert v2.regions[BAD_REGION] - v3.regions[BAD_REGION] >= 0.10
    for region in REGIONS:
        if region != BAD_REGION:
            assert v3.regions[region] >= v2.regions[region] - 0.02, region


def test_saved_models_load_and_predict(models: DemoModels, data: DemoData) -> None:
    for version, path in models.paths.items():
        assert Path(path).exists()
        model = joblib.load(path)
        assert model.predict(data.x_pool[:3]).shape == (3,), version
