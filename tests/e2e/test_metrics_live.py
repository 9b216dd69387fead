"""Every documented metric, judged live: through the real gateway, prediction log, feedback
endpoint, analysis engine and controller of one `coalmine serve`, with real model processes.

For each metric name of the README: a rollout of a candidate as good as production is
promoted with that criterion judged on data (n > 0 in a recorded judgement), and a rollout of
a candidate made bad in that metric is rolled back with the criterion named in the reason.
A criterion that received no data holds its step (it never passes by default), so a promotion
here means the metric really got its data.

Traffic: labelled requests (iris for classification, diabetes for regression), each label and
a business outcome (`clicked`: the answer was right) sent as two separate feedback items.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from coalmine.testing import LocalCoalmine, serve_estimator

# Not in the default run (about a minute a metric): `pytest -m live tests/e2e`.
pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(900)]

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIAB_X, DIAB_Y = load_diabetes(return_X_y=True)
# AUC needs a binary task (a score for class 1): breast cancer, 2 classes
CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
DATA = {
    "classification": (IRIS_X, IRIS_Y),
    "binary": (CANCER_X, CANCER_Y),
    "regression": (DIAB_X, DIAB_Y),
}


@dataclass(frozen=True)
class Case:
    metric: str
    criterion: dict[str, Any]
    task: str = "classification"  # or "binary" (judged as classification), "regression"
    bad: str = "worse"  # how the bad candidate is made: worse | constant | errors | slow
    shadow: bool = True  # judged in shadow too (else canary only)
    named_as: str = ""  # the words the rollback reason uses for it (default: the metric)
    known: str = ""  # a defect this run found and that is still open: the case is xfail

    @property
    def words(self) -> str:
        return self.named_as or self.metric


CASES = [
    Case("error_rate", {"margin": 0.02}, bad="errors"),
    Case("latency_mean", {"max_ratio": 2.0}, bad="slow"),
    Case("latency_p50", {"max_ratio": 2.0}, bad="slow"),
    Case("latency_p95", {"max_ratio": 2.0}, bad="slow"),
    # An identical shadow's p99 was 3.5x production's: the mirror piled up to 16 copies on a
    # stalling shadow. Copies now follow production's concurrency (gateway/mirror.py) and it
    # measures 1.07x; what is left is the width of the p99 sequence on a loaded machine.
    Case(
        "latency_p99",
        {"max_ratio": 2.0},
        bad="slow",
        # passes on an idle machine (58 s); with the machine at a load of ~15 the p99 ratio's
        # CS after 7,000 pairs was still 0.68x to 2.40x, so it can exceed the case's 150 s
    ),
    Case("accuracy", {"margin": 0.05}),
    Case("log_loss", {"margin": 0.1}),
    Case("auc", {"margin": 0.05}, task="binary"),
    Case("mae", {"max_ratio": 1.2}, task="regression"),
    Case("rmse", {"max_ratio": 1.2}, task="regression"),
    Case("agreement", {"min": 0.9}),
    Case("mean_abs_diff", {"max": 20.0}, task="regression", named_as="mean |difference|"),
    Case("psi", {"max": 0.25}, bad="constant", named_as="PSI"),
    Case("js", {"max": 0.1}, bad="constant", named_as="Jensen–Shannon"),
    Case("outcome:clicked", {"margin": 0.05}, shadow=False),
    Case("user:correct", {"margin": 0.05}),
]


def _estimators(task: str) -> dict[str, Any]:
    if task == "classification":
        good = LogisticRegression(max_iter=500).fit(IRIS_X, IRIS_Y)
        # sees the sepals only: about 15 points less accurate, its scores less sharp
        worse = make_pipeline(
            ColumnTransformer([("sepal", "passthrough", [0, 1])]), LogisticRegression(max_iter=500)
        ).fit(IRIS_X, IRIS_Y)
        constant = DummyClassifier(strategy="constant", constant=0).fit(IRIS_X, IRIS_Y)
        return {"good": good, "worse": worse, "constant": constant}
    if task == "binary":
        good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        # sees the texture only: AUC about 0.78 against about 0.99
        worse = make_pipeline(
            ColumnTransformer([("texture", "passthrough", [1])]), StandardScaler(),
            LogisticRegression(max_iter=500),
        )  # fmt: skip
        constant = DummyClassifier(strategy="constant", constant=0)
        models = {"good": good, "worse": worse, "constant": constant}
        return {name: model.fit(CANCER_X, CANCER_Y) for name, model in models.items()}
    good = LinearRegression().fit(DIAB_X, DIAB_Y)
    worse = DummyRegressor(strategy="mean").fit(DIAB_X, DIAB_Y)
    return {"good": good, "worse": worse, "constant": worse}


def _spec(case: Case) -> dict[str, Any]:
    """A shadow judged on the case's criterion, then promotion; a canary only for metrics
    that need served answers (business outcomes)."""
    # must: pass — the good candidate must show it is good on this metric (a step that
    # advances because nothing failed would not prove the metric got data)
    criterion = {"metric": case.metric, "name": case.metric.replace(":", "-"), "must": "pass",
                 **case.criterion}  # fmt: skip
    if case.shadow:
        return {
            "shadow": {"min_duration": 1, "max_duration": 150, "min_samples": 100,
                       "criteria": [criterion], "then": "promote"},
            "interval": 0.25,
        }  # fmt: skip
    return {
        "shadow": {"enabled": False},
        "canary": {"steps": [50, 100], "min_duration": 1, "max_duration": 90,
                   "min_samples": 50, "criteria": [criterion], "on_inconclusive": "fail"},
        "interval": 0.25,
    }  # fmt: skip


class Load:
    """Requests through the gateway; per answer, its label and then (a separate feedback
    item) the outcome `clicked` = the answer was right."""

    def __init__(self, gateway: str, model: str, task: str, threads: int = 3) -> None:
        self.gateway, self.model, self.task = gateway, model, task
        self.X, self.Y = DATA[task]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(seed,), daemon=True)
                        for seed in range(threads)]  # fmt: skip

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        pending: list[tuple[float, str, Any, Any]] = []
        with httpx.Client(base_url=self.gateway, timeout=15) as http:
            while not self.stop.is_set():
                i = rng.randrange(len(self.X))
                try:
                    r = http.post(f"/v1/models/{self.model}:predict",
                                  json={"instances": [self.X[i].tolist()]},
                                  headers={"X-User-Id": f"u{rng.randrange(10_000)}"})  # fmt: skip
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    answer = (r.json().get("predictions") or [None])[0]
                    label = self.Y[i].item()
                    pending.append((time.monotonic() + 0.3, r.headers["X-Request-ID"], label,
                                    answer))  # fmt: skip
                due = [p for p in pending if p[0] <= time.monotonic()]
                if due:
                    pending = pending[len(due) :]
                    labels = [{"request_id": rid, "label": y} for _, rid, y, _ in due]
                    clicks = [{"request_id": rid, "outcomes": {"clicked": int(a == y)}}
                              for _, rid, y, a in due]  # fmt: skip
                    for items in (labels, clicks):
                        with contextlib.suppress(httpx.HTTPError):
                            http.post("/v1/feedback", json={"items": items})


def _selected(request: pytest.FixtureRequest) -> list[Case]:
    """The cases this session runs (after -k): only their models are started, so that
    `-k accuracy` does not start sixteen model processes on a loaded machine."""
    cases = [
        item.callspec.params["case"]
        for item in request.session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)
    ]
    return cases or CASES


@pytest.fixture(scope="module")
def coalmine_with_every_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One `coalmine serve` for every selected case: a model per metric, its stable version."""
    from concurrent.futures import ThreadPoolExecutor

    tasks = {_model(case): case.task for case in _selected(request)}
    names = {m: "regression" if t == "regression" else "classification" for m, t in tasks.items()}
    servers: dict[str, Any] = {}
    try:
        # model processes start in parallel: each loads scikit-learn for a second or more
        with ThreadPoolExecutor(4) as pool:
            started = pool.map(
                lambda item: (
                    item[0],
                    serve_estimator(_estimators(item[1])["good"], item[0], "v1"),
                ),
                tasks.items(),
            )
            servers.update(started)
        models = {name: {"v1": server} for name, server in servers.items()}
        config = {"user_metrics": {"correct": "tests.e2e.user_metrics:correct"}}
        with LocalCoalmine(models, tasks=names, config=config,
                           workdir=tmp_path_factory.mktemp("live")) as cm:  # fmt: skip
            yield cm
    finally:
        for server in servers.values():
            server.stop()


def _model(case: Case) -> str:
    return "m-" + case.metric.replace(":", "-").replace("_", "-")


def _last_sentences(client: Any, rollout_id: int) -> list[str]:
    """The sentences of the rollout's last recorded judgement."""
    judged = [e["judgement"] for e in client.events(rollout_id) if e.get("judgement")]
    return [r.get("sentence", "") for r in (judged[-1].get("results") or [])] if judged else []


def _judged(client: Any, rollout_id: int, name: str) -> int:
    """The most candidate samples any recorded judgement of the rollout gave `name`."""
    seen = 0
    for event in client.events(rollout_id):
        for result in (event.get("judgement") or {}).get("results") or []:
            if result.get("name") == name and result.get("slice") in (None, "", "overall"):
                seen = max(seen, int(result.get("n_candidate") or 0))
    return seen


def _run(cm: Any, case: Case, candidate: str, estimator: Any, **faults: Any) -> dict[str, Any]:
    model = _model(case)
    with (
        serve_estimator(estimator, model, candidate, **faults) as server,
        Load(cm.gateway_url, model, case.task),
    ):
        client = cm.client()
        rollout = client.start_rollout(model, candidate, server.url, _spec(case))
        try:
            final = rollout.wait(timeout=240, poll_s=0.5)
        except TimeoutError as exc:  # say what the judge last saw
            raise AssertionError(f"{exc}: {_last_sentences(client, rollout.id)}") from exc
        if final["phase"] == "promoted":  # production again, before its server stops
            client.rollback(model)
    final["judged_n"] = _judged(cm.client(), rollout.id, case.metric.replace(":", "-"))
    return final


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.metric,
                     marks=[pytest.mark.xfail(reason=c.known, strict=False)] if c.known else [])
        for c in CASES
    ],
)  # fmt: skip
def test_metric_is_judged_live(coalmine_with_every_model: Any, case: Case) -> None:
    cm = coalmine_with_every_model
    estimators = _estimators(case.task)
    good = _run(cm, case, "v2", estimators["good"])
    assert good["phase"] == "promoted", good["reason"]
    assert good["judged_n"] > 0, f"{case.metric} was never judged on data"

    faults: dict[str, Any] = {}
    bad_estimator = estimators["good"]
    if case.bad == "errors":
        faults["error_rate"] = 0.3
    elif case.bad == "slow":
        faults["delay_ms"] = 40.0
    else:
        bad_estimator = estimators[case.bad]
    bad = _run(cm, case, "v3", bad_estimator, **faults)
    assert bad["phase"] == "rolled_back", bad["reason"]
    assert case.words in bad["reason"], bad["reason"]
