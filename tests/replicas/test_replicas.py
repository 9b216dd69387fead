"""Three `coalmine gateway` processes (standing for three machines) on one PostgreSQL, behind
a real nginx load balancer, in front of real model-server processes, with one controller:

- a sticky key reaches the same version on every replica (nginx sends a user's requests to
  different replicas; only the hashing can keep them together);
- a weight change reaches all three replicas through LISTEN/NOTIFY, well inside a second
  (the propagation time is printed; the poll interval is set to its 1 s maximum);
- the fast guard tripping on replica 2 alone rolls the rollout back through the controller,
  and every replica stops sending to that canary;
- every replica's rows land in the one log the analysis reads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, func, select

from coalmine.routing.split import bucket_of
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from coalmine.store.schema import guard_trips, predictions
from coalmine.testing import serve_estimator
from tests.conftest import fresh_postgres_database
from tests.replicas.harness import Cluster, GatewayReplica, write_config

pytestmark = pytest.mark.postgres

X, Y = load_iris(return_X_y=True)
BODY = {"instances": [X[0].tolist()]}
USERS = [f"user-{i}" for i in range(60)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """v1 and v2: real classifiers; broken: v2's model answering 500 to every request."""
    logs = tmp_path_factory.mktemp("replica-models")
    est = LogisticRegression(max_iter=500).fit(X, Y)
    with (
        serve_estimator(est, "iris", "v1", log_dir=logs) as v1,
        serve_estimator(est, "iris", "v2", log_dir=logs) as v2,
        serve_estimator(est, "iris", "broken", log_dir=logs, error_rate=1.0, seed=1) as broken,
    ):
        yield {"v1": v1.url, "v2": v2.url, "broken": broken.url}


@pytest.fixture(scope="module")
def store(postgres_server: str) -> str:
    return fresh_postgres_database(postgres_server)


@pytest.fixture(scope="module")
def engine(store: str) -> Iterator[Engine]:
    eng = open_engine(store)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, store: str, models: dict[str, str]
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("replicas")
    config = write_config(
        folder / "coalmine.yaml", store, {"iris": {"v1": models["v1"], "v2": models["v2"]}}
    )
    with Cluster(config, replicas=3) as c:
        yield c


def version_of(http: httpx.Client, url: str, user: str) -> tuple[str, str]:
    """(the version that answered, the replica nginx chose) for one request of `user`."""
    r = http.post(url, json=BODY, headers={"X-User-Id": user})
    assert r.status_code == 200, r.text
    return r.headers["X-Model-Version"], r.headers.get("X-Upstream", "")


def all_replicas_route(cluster: Cluster, user: str, version: str, timeout: float = 10) -> None:
    """Wait until every replica sends `user` to `version` (a route change has landed)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        for g in cluster.gateways:
            while version_of(http, g.predict_url("iris"), user)[0] != version:
                assert time.monotonic() < deadline, f"{g.url} never routed {user} to {version}"
                time.sleep(0.02)


def test_a_sticky_key_reaches_the_same_version_on_every_replica(
    cluster: Cluster, engine: Engine
) -> None:
    repo = RouteRepository(engine)
    repo.set_route("iris", canary="v2", canary_weight_bp=3000)
    # a user in the canary's 30% (its bucket is the same on every replica by design)
    probe = next(u for u in USERS if _bucket_is_canary(u))
    all_replicas_route(cluster, probe, "v2")
    assert cluster.lb is not None
    seen: dict[str, set[str]] = {}
    upstreams: Counter[str] = Counter()
    with httpx.Client(timeout=5) as http:
        for user in USERS:
            for g in cluster.gateways:  # each replica asked directly
                seen.setdefault(user, set()).add(version_of(http, g.predict_url("iris"), user)[0])
            for _ in range(3):  # and three times through the round-robin balancer
                version, upstream = version_of(http, cluster.lb.predict_url("iris"), user)
                seen[user].add(version)
                upstreams[upstream] += 1
    assert len(upstreams) == 3, upstreams  # nginx did spread the users over all replicas
    split = [u for u, versions in seen.items() if len(versions) != 1]
    assert split == [], f"users answered by different versions on different replicas: {split}"
    on_canary = sum(seen[u] == {"v2"} for u in USERS)
    assert 0 < on_canary < len(USERS)  # a real split, not everyone on one side


def _bucket_is_canary(user: str, weight_bp: int = 3000) -> bool:
    return bucket_of(user, "iris") < weight_bp  # the gateway's own hashing (salt: the model)


def test_a_weight_change_reaches_all_three_replicas_within_a_second(
    cluster: Cluster, engine: Engine
) -> None:
    repo = RouteRepository(engine)
    repo.set_route("iris", canary="v2", canary_weight_bp=0)
    user = USERS[0]
    all_replicas_route(cluster, user, "v1")
    switched: dict[str, float] = {}
    go = threading.Event()
    changed_at: list[float] = []

    def watch(replica: GatewayReplica) -> None:
        with httpx.Client(timeout=5) as http:
            go.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if version_of(http, replica.predict_url("iris"), user)[0] == "v2":
                    switched[replica.url] = time.monotonic()
                    return

    watchers = [threading.Thread(target=watch, args=(g,)) for g in cluster.gateways]
    for w in watchers:
        w.start()
    go.set()
    time.sleep(0.2)  # the watchers are sending
    changed_at.append(time.monotonic())
    repo.set_route("iris", canary_weight_bp=10_000)  # committed when this returns
    committed = time.monotonic()
    for w in watchers:
        w.join(15)
    delays = {url: at - committed for url, at in switched.items()}
    print(
        "\nweight change propagation (commit -> first request answered by the new version): "
        + ", ".join(f"{url.rsplit(':', 1)[1]}: {ms * 1000:.0f} ms" for url, ms in delays.items())
        + f"; routing_poll_s 1.0 (commit took {(committed - changed_at[0]) * 1000:.0f} ms)"
    )
    assert sorted(switched) == sorted(g.url for g in cluster.gateways), switched
    assert max(delays.values()) < 3.0  # generous: the NOTIFY path takes milliseconds


def test_every_replica_logs_into_the_one_store_the_analysis_reads(
    cluster: Cluster, engine: Engine
) -> None:
    RouteRepository(engine).set_route("iris", canary="v2", canary_weight_bp=5000)
    assert cluster.lb is not None
    answered: dict[str, str] = {}
    with httpx.Client(timeout=5) as http:
        for i in range(90):
            r = http.post(
                cluster.lb.predict_url("iris"), json=BODY, headers={"X-User-Id": f"log-{i}"}
            )
            assert r.status_code == 200
            answered[r.headers["X-Request-ID"]] = r.headers["X-Upstream"]
    assert len(set(answered.values())) == 3
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            logged = set(
                conn.execute(
                    select(predictions.c.request_id).where(
                        predictions.c.request_id.in_(list(answered))
                    )
                ).scalars()
            )
        if logged == set(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert logged == set(answered)


def test_a_guard_trip_on_replica_2_rolls_the_rollout_back(
    cluster: Cluster, engine: Engine, models: dict[str, str]
) -> None:
    RouteRepository(engine).set_route("iris", canary=None, canary_weight_bp=0)
    assert cluster.control is not None
    spec: dict[str, Any] = {
        "shadow": {"enabled": False},
        "interval": 0.3,
        # long steps: only the fast guard can end this rollout early
        "canary": {"steps": [50, 100], "min_duration": 60, "max_duration": 120,
                   "min_samples": 5, "criteria": [{"metric": "error_rate"}],
                   "guard_failures": 3},
    }  # fmt: skip
    with cluster.control.client() as client:
        rollout = client.start_rollout("iris", "broken", models["broken"], spec)
        deadline = time.monotonic() + 20
        while client.status(rollout.id)["canary_weight"] == 0:
            assert time.monotonic() < deadline, client.status(rollout.id)
            time.sleep(0.05)
        with engine.connect() as conn:
            trips_before = conn.execute(select(func.count()).select_from(guard_trips)).scalar()
        assert trips_before == 0
        # traffic to replica 2 only: it alone sees the canary fail
        replica2 = cluster.gateways[1]
        statuses: Counter[tuple[int, str]] = Counter()
        with httpx.Client(timeout=5) as http:
            deadline = time.monotonic() + 30
            while client.status(rollout.id)["phase"] not in ("rolled_back",):
                assert time.monotonic() < deadline, client.status(rollout.id)
                for user in USERS[:20]:
                    r = http.post(replica2.predict_url("iris"), json=BODY,
                                  headers={"X-User-Id": user})  # fmt: skip
                    statuses[(r.status_code, r.headers.get("X-Model-Version", ""))] += 1
                time.sleep(0.05)
        status = client.status(rollout.id)
        kinds = [e["kind"] for e in client.events(rollout.id)]
    assert status["reason"].startswith("fast guard"), status
    assert kinds[-2:] == ["rollback", "rolled_back"], kinds
    # the candidate's 500s reached replica 2's users (the answer, as the guard judged it)
    assert statuses[(500, "broken")] >= 3, statuses
    with engine.connect() as conn:
        trips = conn.execute(select(guard_trips.c.version, guard_trips.c.rollout_id)).all()
    assert trips and set(trips) == {("broken", rollout.id)}
    # every replica, not only the one that tripped, now sends nobody to the broken canary
    with httpx.Client(timeout=5) as http:
        for g in cluster.gateways:
            versions = {version_of(http, g.predict_url("iris"), u)[0] for u in USERS[:30]}
            assert versions == {"v1"}, (g.url, versions)
