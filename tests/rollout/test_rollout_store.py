"""Rollout persistence on SQLite and PostgreSQL: one transaction per transition, CAS, 409s."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from coalmine.config import parse_config
from coalmine.rollout import machine
from coalmine.rollout.machine import Evidence, Phase, Tick
from coalmine.rollout.spec import parse_spec
from coalmine.rollout.store import NotFound, RolloutConflict, RolloutRepository
from coalmine.store.routes import RouteRepository

CONFIG = parse_config(
    {
        "models": [
            {
                "name": "iris",
                "versions": [{"name": "v1", "url": "http://127.0.0.1:9/"}],
                "routing": {"stable": "v1"},
            }
        ]
    }
)
SPEC = parse_spec(
    {
        "shadow": {"enabled": False},
        "canary": {"steps": [10, 100], "min_duration": 0, "min_samples": 0},
    }
)
OK = Evidence(samples=10, must_not_fail=1)


@pytest.fixture
def repos(store_engine: Engine) -> tuple[RolloutRepository, RouteRepository]:
    routes = RouteRepository(store_engine)
    routes.seed_from_config(CONFIG)
    return RolloutRepository(store_engine), routes


def test_transitions_write_state_event_and_route_together(
    repos: tuple[RolloutRepository, RouteRepository],
) -> None:
    rollouts, routes = repos
    rec = rollouts.create("iris", "v2", "http://127.0.0.1:10/", SPEC, now=100.0)
    assert rec.state.phase == Phase.PENDING and rec.state.previous_stable == "v1"
    assert routes.get("iris").rollout_id == rec.id  # type: ignore[union-attr]
    assert routes.versions("iris")["v2"] == "http://127.0.0.1:10"

    t = machine.step(rec.state, Tick(), 101.0)
    after = rollouts.apply(rec, t, now=101.0)
    assert after is not None and after.state.phase == Phase.CANARY
    route = routes.get("iris")
    assert route is not None and (route.canary, route.canary_weight_bp) == ("v2", 1000)

    # the same transition applied again from the stale record is refused: exactly once
    assert rollouts.apply(rec, t, now=101.5) is None
    kinds = [e["kind"] for e in rollouts.events(rec.id)]
    assert kinds == ["created", "advance"]

    for now in (102.0, 103.0, 104.0):
        cur = rollouts.get(rec.id)
        nxt = machine.step(cur.state, Tick(OK), now)
        assert rollouts.apply(cur, nxt, now=now) is not None
    final = rollouts.get(rec.id)
    assert final.state.phase == Phase.PROMOTED and final.state.outcome == "promoted"
    route = routes.get("iris")
    assert route is not None and (route.stable, route.canary, route.rollout_id) == (
        "v2",
        None,
        None,
    )
    events = rollouts.events(rec.id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["to_phase"] for e in events][-2:] == ["promoting", "promoted"]

    # `coalmine rollback iris` restores the previous stable at once
    done = rollouts.rollback_model("iris")
    assert done.summary()["stable"] == "v1" and done.after.version == done.before.version + 1
    assert rollouts.events(rec.id)[-1]["kind"] == "model_rollback"
    assert routes.get("iris").stable == "v1"  # type: ignore[union-attr]
    with pytest.raises(RolloutConflict, match="nothing to roll back"):
        rollouts.rollback_model("iris")


def test_one_active_rollout_per_model(repos: tuple[RolloutRepository, RouteRepository]) -> None:
    rollouts, _ = repos
    first = rollouts.create("iris", "v2", "http://127.0.0.1:10", SPEC)
    with pytest.raises(RolloutConflict, match=f"already has an active rollout: #{first.id}"):
        rollouts.create("iris", "v3", "http://127.0.0.1:11", SPEC)
    assert rollouts.apply(first, machine.step(first.state, machine.Abort(), 1.0)) is not None
    with pytest.raises(RolloutConflict, match="already the stable"):
        rollouts.create("iris", "v1", "http://127.0.0.1:10", SPEC)
    with pytest.raises(NotFound):
        rollouts.create("nope", "v2", "http://127.0.0.1:10", SPEC)
    # once the first ended, a new one may start
    assert rollouts.create("iris", "v3", "http://127.0.0.1:11", SPEC).state.candidate == "v3"


def test_racing_writers_apply_a_transition_once(
    repos: tuple[RolloutRepository, RouteRepository],
) -> None:
    rollouts, _ = repos
    rec = rollouts.create("iris", "v2", "http://127.0.0.1:10", SPEC, now=1.0)
    t = machine.step(rec.state, Tick(), 2.0)
    results: list[object] = []

    def go() -> None:
        results.append(rollouts.apply(rec, t, now=2.0))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(r is not None for r in results) == 1
    assert [e["kind"] for e in rollouts.events(rec.id)] == ["created", "advance"]


def test_a_paired_canary_routes_paired_copies_only_while_the_canary_has_traffic(
    repos: tuple[RolloutRepository, RouteRepository],
) -> None:
    rollouts, routes = repos
    spec = parse_spec(
        {
            "shadow": {"enabled": False},
            "canary": {"steps": [10, 100], "min_duration": 0, "min_samples": 0, "paired": True},
        }
    )
    rec = rollouts.create("iris", "v2", "http://127.0.0.1:10/", spec, now=100.0)
    assert routes.get("iris").paired is False  # type: ignore[union-attr]  # pending: no canary
    after = rollouts.apply(rec, machine.step(rec.state, Tick(), 101.0), now=101.0)
    assert after is not None and after.state.phase == Phase.CANARY
    route = routes.get("iris")
    assert route is not None and (route.canary_weight_bp, route.paired) == (1000, True)
    for now in (102.0, 103.0, 104.0):
        cur = rollouts.get(rec.id)
        assert rollouts.apply(cur, machine.step(cur.state, Tick(OK), now), now=now) is not None
    route = routes.get("iris")
    assert rollouts.get(rec.id).state.phase == Phase.PROMOTED
    assert route is not None and (route.stable, route.paired) == ("v2", False)
