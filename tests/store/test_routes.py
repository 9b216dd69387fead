"""RouteRepository contract: runs on SQLite and PostgreSQL through `store_engine`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from coalmine.config import CoalmineConfig, parse_config
from coalmine.store.routes import RouteError, RouteRepository, set_route_in


def _config(
    canary_weight: float = 12.34, stable_url: str = "http://127.0.0.1:9001"
) -> CoalmineConfig:
    return parse_config(
        {
            "models": [
                {
                    "name": "iris",
                    "versions": [
                        {"name": "v1", "url": stable_url},
                        {"name": "v2", "url": "http://127.0.0.1:9002/"},
                        {"name": "v3", "url": "http://127.0.0.1:9003"},
                    ],
                    "routing": {
                        "stable": "v1",
                        "canary": "v2",
                        "canary_weight": canary_weight,
                        "shadow": "v3",
                        "mirror_share": 50,
                    },
                },
                {
                    "name": "churn",
                    "versions": [{"name": "a", "url": "http://127.0.0.1:9010"}],
                    "routing": {"stable": "a", "salt": "s1"},
                },
            ]
        }
    )


def test_seed_creates_routes_in_basis_points_with_urls(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    state = repo.load_all()
    iris, churn = state["iris"], state["churn"]
    assert (iris.stable, iris.canary, iris.shadow) == ("v1", "v2", "v3")
    assert (iris.canary_weight_bp, iris.mirror_bp, iris.salt, iris.revision) == (
        1234,
        5000,
        "iris",
        1,
    )
    assert iris.urls == {
        "v1": "http://127.0.0.1:9001",
        "v2": "http://127.0.0.1:9002",
        "v3": "http://127.0.0.1:9003",
    }
    assert (churn.salt, churn.canary, churn.canary_weight_bp, churn.mirror_bp) == ("s1", None, 0, 0)
    assert repo.get("iris") == iris
    assert repo.get("nope") is None


def test_reseed_keeps_the_live_route_but_updates_version_urls(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    repo.set_route("iris", canary_weight_bp=5000)
    repo.seed_from_config(_config(canary_weight=1, stable_url="http://127.0.0.1:9999"))
    iris = repo.get("iris")
    assert iris is not None
    assert iris.canary_weight_bp == 5000  # the store is the truth after the first start
    assert iris.revision == 2
    assert iris.urls["v1"] == "http://127.0.0.1:9999"


def test_set_route_bumps_revision_and_validates(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    new = repo.set_route("iris", canary_weight_bp=2500, mirror_bp=0, rollout_id=7, guard_failures=3)
    assert (new.canary_weight_bp, new.mirror_bp, new.rollout_id, new.revision) == (2500, 0, 7, 2)
    assert new.guard_failures == 3
    assert repo.get("iris") == new
    with pytest.raises(RouteError, match="unknown version"):
        repo.set_route("iris", canary="v9")
    with pytest.raises(RouteError, match="unknown model"):
        repo.set_route("nope", canary_weight_bp=1)
    with pytest.raises(RouteError, match="cannot change"):
        repo.set_route("iris", salt="x")
    with pytest.raises(ValueError, match="canary_weight_bp"):
        repo.set_route("iris", canary_weight_bp=10_001)
    with pytest.raises(RouteError, match="needs a canary"):
        repo.set_route("iris", canary=None)
    promoted = repo.set_route("iris", stable="v2", canary=None, canary_weight_bp=0)
    assert (promoted.stable, promoted.canary, promoted.revision) == ("v2", None, 3)
    assert repo.get("iris") == promoted  # failed changes left no trace


def test_add_version_then_route_to_it(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    repo.add_version("iris", "v4", "http://127.0.0.1:9004/")
    assert repo.versions("iris")["v4"] == "http://127.0.0.1:9004"
    assert repo.set_route("iris", canary="v4").urls["v4"] == "http://127.0.0.1:9004"


def test_set_route_in_joins_the_callers_transaction(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store_engine.begin() as conn:
        set_route_in(conn, "iris", canary_weight_bp=9000)
        raise Boom  # the controller failed to persist its transition: roll back both
    assert repo.get("iris").canary_weight_bp == 1234  # type: ignore[union-attr]
    with store_engine.begin() as conn:
        set_route_in(conn, "iris", canary_weight_bp=9000)
    assert repo.get("iris").canary_weight_bp == 9000  # type: ignore[union-attr]


def test_guard_trip_zeroes_canary_and_records_atomically(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    repo.set_route("iris", rollout_id=3)
    first = repo.record_guard_trip("iris", "v2", 3, "5 consecutive failures")
    iris = repo.get("iris")
    assert iris is not None
    assert (iris.canary, iris.canary_weight_bp, iris.revision) == ("v2", 0, 3)
    # a stale trip for a version that is no longer the canary changes no route
    repo.set_route("iris", canary="v3", canary_weight_bp=100)
    second = repo.record_guard_trip("iris", "v2", 3, "late")
    assert repo.get("iris").canary_weight_bp == 100  # type: ignore[union-attr]
    trips = repo.guard_trips_since("iris", 0)
    assert [(t.id, t.version, t.rollout_id, t.reason) for t in trips] == [
        (first, "v2", 3, "5 consecutive failures"),
        (second, "v2", 3, "late"),
    ]
    assert repo.guard_trips_since("iris", first) == trips[1:]
    assert repo.guard_trips_since("churn", 0) == []


def test_concurrent_guard_trips_record_every_trip_and_bump_once(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    with ThreadPoolExecutor(4) as pool:
        ids = list(
            pool.map(lambda i: repo.record_guard_trip("iris", "v2", None, f"p{i}"), range(8))
        )
    assert len(set(ids)) == 8
    iris = repo.get("iris")
    assert iris is not None
    assert (iris.canary_weight_bp, iris.revision) == (0, 2)  # one change, however many trips


def test_failed_guard_trip_leaves_no_row_and_no_route_change(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    with pytest.raises(DBAPIError):
        repo.record_guard_trip("iris", "v2", None, None)  # type: ignore[arg-type]
    assert repo.guard_trips_since("iris") == []
    assert repo.get("iris").canary_weight_bp == 1234  # type: ignore[union-attr]


def test_baseline_share_is_stored_and_validated(store_engine: Engine) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(_config())
    assert repo.get("iris").baseline_bp == 0  # type: ignore[union-attr]
    new = repo.set_route(
        "iris", canary="v2", canary_weight_bp=500, baseline_url="http://127.0.0.1:9100",
        baseline_bp=500,
    )  # fmt: skip
    assert (new.baseline_url, new.baseline_bp) == ("http://127.0.0.1:9100", 500)
    assert repo.get("iris") == new
    assert repo.load_all()["iris"] == new
    with pytest.raises(ValueError, match="must not exceed"):
        repo.set_route("iris", canary_weight_bp=9600)
    with pytest.raises(ValueError, match="needs a baseline_url"):
        repo.set_route("iris", baseline_url=None)
    cleared = repo.set_route("iris", baseline_url=None, baseline_bp=0)
    assert (cleared.baseline_url, cleared.baseline_bp) == (None, 0)
    assert repo.get("iris") == cleared
