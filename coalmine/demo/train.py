"""Train the demo's three versions and check, offline, that they tell the intended story.

- v1 (stable): last quarter's model, fitted on the first small batch of labels.
- v2 (good candidate): the same recipe retrained on all labels collected since: better
  everywhere.
- v3 (bad candidate, rolled out after v2 is promoted): v2's recipe, but a labelling bug in
  one region relabelled many of its handwritten 2s as 3s. Against v2 it is about 2.5 points
  worse overall (inside a 4-point margin) and about 13 points worse in that region. Only
  a per-slice analysis catches it.

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

BAD_REGION = "south"  # ~21% of traffic, and nearly all of the data's 2s live there
BUGGY_DIGIT = 2  # the labelling bug: a share of BAD_REGION's 2s were labelled 3
CORRUPTED_SHARE = 0.45
V1_TRAINING_ROWS = 120


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
        # v3 is judged against v2, production by the time it is rolled out.
        if v3.overall < v2.overall - 0.03:
            out.append(f"v3 looks bad overall ({v3.overall:.3f} vs {v2.overall:.3f})")
        drop = v2.regions[self.bad_region] - v3.regions[self.bad_region]
        if drop < 0.10:
            out.append(f"v3 is only {drop * 100:.1f} pts worse in {self.bad_region}")
        elsewhere = [
            r for r in REGIONS if r != self.bad_region and v3.regions[r] < v2.regions[r] - 0.02
        ]
        if elsewhere:
            out.append(f"v3 is also worse outside {self.bad_region}: {elsewhere}")
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
    in_region = (data.region_train == BAD_REGION) & (buggy == BUGGY_DIGIT)
    hit = in_region & (np.random.default_rng(seed).random(len(buggy)) < CORRUPTED_SHARE)
    buggy[hit] = BUGGY_DIGIT + 1
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
