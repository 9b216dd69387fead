"""The demo's data: scikit-learn's bundled handwritten digits, nothing downloaded.

Every sample gets a `region`, a slice attribute derived deterministically from its pixels
(k-means clusters, named by size), so a region is a population whose inputs differ — the
way real regions differ in writing habits, devices or products. Users live in one region,
so a sticky user id implies a region. The data are split once into a training set and a
held-out pool the traffic generator draws requests (and their late labels) from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["REGIONS", "DemoData", "load_demo_data"]

# Named by cluster size, largest first: "north" is the busiest region.
REGIONS = ("north", "south", "east", "west", "central")


@dataclass(frozen=True)
class DemoData:
    x_train: np.ndarray
    y_train: np.ndarray
    region_train: np.ndarray  # region names
    x_pool: np.ndarray
    y_pool: np.ndarray
    region_pool: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def pool_indices(self, region: str) -> np.ndarray:
        return np.flatnonzero(self.region_pool == region)

    def region_shares(self) -> dict[str, float]:
        return {r: float(np.mean(self.region_pool == r)) for r in REGIONS}


def _regions(x: np.ndarray, seed: int) -> np.ndarray:
    clusters = KMeans(n_clusters=len(REGIONS), random_state=seed, n_init=10).fit_predict(x)
    by_size = np.argsort(-np.bincount(clusters, minlength=len(REGIONS)), kind="stable")
    names = np.empty(len(REGIONS), dtype=object)
    for rank, cluster in enumerate(by_size):
        names[cluster] = REGIONS[rank]
    return np.asarray(names[clusters], dtype=str)


def load_demo_data(seed: int = 0, pool_share: float = 0.4) -> DemoData:
    """The digits with regions, split (stratified by digit) into training data and a pool."""
    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64)
    y = np.asarray(digits.target)
    regions = _regions(x, seed)
    x_tr, x_po, y_tr, y_po, r_tr, r_po = train_test_split(
        x, y, regions, test_size=pool_share, random_state=seed, stratify=y
    )
    return DemoData(x_tr, y_tr, r_tr, x_po, y_po, r_po)
