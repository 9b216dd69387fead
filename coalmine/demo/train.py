"""Train the demo's three versions and check, offline, that they tell the intended story.

- v1 (stable): last quarter's model, fitted on the first small batch of labels.
- v2 (good candidate): the same recipe retrained on all labels collected since: better
  everywhere.
- v3 (bad candidate): v2's recipe, but a labelling bug shifted a share of one region's
  labels by one digit. Overall it looks as good as production; in that region it is far
  worse. Only a per-slice analysis catches it.

The offline table printed by the demo comes from `evaluate`; the rollout decisions do not:
they come from the gateway's logged traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from coalmine.demo.data import REGIONS, DemoData

__all__ = ["BAD_REGION", "DemoModels", "Evaluation", "evaluate", "train_demo_models"]

BAD_REGION = "north"  # the busiest region, so the evidence against v3 arrives soonest
V1_TRAINING_ROWS = 120
CORRUPTED_SHARE = 0.4  # of BAD_REGION's training labels, shifted y -> y + 1 (mod 10)


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on the held-out pool, overall and per region."""

    overall: float
    regions: dict[str, float]


@dataclass(frozen=True)
class DemoModels:
    paths: dict[str, Path]  # version -> joblib file
    offline: dict[str, Evaluation] = field(default_factory=dict)
    bad_region: str = BAD_REGION

    def problems(self) -> list[str]:
        """Where the offline numbers do not tell the demo's story (empty = they do)."""
        v1, v2, v3 = (self.offline[v] for v in ("v1", "v2", "v3"))
        out = []
        if v2.overall < v1.overall + 0.03:
            out.append(f"v2 is not clearly better overall ({v2.overall:.3f} vs {v1.overall:.3f})")
        worse = [r for r in REGIONS if v2.regions[r] < v1.regions[r] - 0.01]
        if worse:
            out.append(f"v2 is worse than v1 in {worse}")
        if v3.overall < v1.overall - 0.03:
            out.append(f"v3 looks bad overall ({v3.overall:.3f} vs {v1.overall:.3f})")
        drop = v1.regions[self.bad_region] - v3.regions[self.bad_region]
        if drop < 0.10:
            out.append(f"v3 is only {drop * 100:.1f} pts worse in {self.bad_region}")
        return out


def _recipe(c: float) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def evaluate(model: Any, data: DemoData) -> Evaluation:
    correct = model.predict(data.x_pool) == data.y_pool
    regions = {r: float(np.mean(correct[data.region_pool == r])) for r in REGIONS}
    return Evaluation(overall=float(np.mean(correct)), regions=regions)


def train_demo_models(out_dir: str | Path, data: DemoData, seed: int = 0) -> DemoModels:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first_batch = rng.choice(len(data.y_train), V1_TRAINING_ROWS, replace=False)
    buggy = data.y_train.copy()
    hit = (data.region_train == BAD_REGION) & (rng.random(len(buggy)) < CORRUPTED_SHARE)
    buggy[hit] = (buggy[hit] + 1) % 10
    models = {
        "v1": _recipe(0.05).fit(data.x_train[first_batch], data.y_train[first_batch]),
        "v2": _recipe(0.1).fit(data.x_train, data.y_train),
        "v3": _recipe(0.1).fit(data.x_train, buggy),
    }
    paths = {}
    for version, model in models.items():
        paths[version] = out / f"digits-{version}.joblib"
        joblib.dump(model, paths[version])
    return DemoModels(paths, {v: evaluate(m, data) for v, m in models.items()})
