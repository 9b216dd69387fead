"""Issue 13's acceptance test, end to end on one real PostgreSQL (slow):

3 gateway replicas (`coalmine gateway`, one process each, standing for three machines)
behind a real nginx load balancer, 2 controllers and a control API (`coalmine serve
--no-gateway`, separate processes), real model-server processes, traffic with sticky users
and late labels through the load balancer, and a real webhook receiver.

- rollout 1 (a good candidate) is promoted although its leader is SIGKILLed in the middle
  of the canary: the other controller takes over and finishes it; the killed one restarts
  and follows;
- rollout 2 (a candidate 15 points less accurate) is rolled back on accuracy judged in
  shadow on every replica's rows;
- every transition of both is in the store once, in seq order, and reached the receiver
  once (by event; receivers drop repeats of a delivery id);
- every request answered 200 has its row in the one prediction log.

The cluster pieces are tests/replicas/harness.py's; the traffic is tests/rollout's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from coalmine.store.engine import open_engine
from coalmine.store.schema import predictions
from tests.conftest import fresh_postgres_database
from tests.ha.cluster import (
    HookReceiver,
    LabelledTraffic,
    assert_exactly_once,
    events,
    leader_of,
    lease_row,
    wait_for_token_above,
)
from tests.replicas.harness import Cluster, ControlPlane, write_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def engine(postgres_server: str) -> Iterator[tuple[str, Engine]]:
    url = fresh_postgres_database(postgres_server)
    eng = open_engine(url)
    try:
        yield url, eng
    finally:
        eng.dispose()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_three_replicas_two_controllers_a_leader_killed_every_event_once(
    tmp_path: Path, engine: tuple[str, Engine], models: dict[str, str]
) -> None:
    url, db = engine
    config = write_config(tmp_path / "coalmine.yaml", url, {"iris": {"v1": models["v1"]}})
    receiver = HookReceiver().start()
    planes: list[ControlPlane] = []
    traffic: LabelledTraffic | None = None
    try:
        with Cluster(config, replicas=3, control=False) as cluster:
            assert cluster.lb is not None
            # generous start timeouts: a loaded CI machine starts these slowly
            api = ControlPlane.start(config, controller=False, name="api", timeout=240)
            planes.append(api)
            ctls = [
                ControlPlane.start(config, api=False, name=f"controller-{n}", timeout=240)
                for n in "ab"
            ]
            planes.extend(ctls)
            traffic = LabelledTraffic(cluster.lb.url, rate=60)
            hook = [{"url": receiver.url}]

            with api.client() as client:
                # 1: a good candidate, promoted across a leader's SIGKILL mid-canary
                good = client.start_rollout(
                    "iris",
                    "v2",
                    models["v2"],
                    {
                        "shadow": {
                            "min_duration": 1,
                            "min_samples": 20,
                            "criteria": [
                                {"metric": "error_rate"},
                                {"metric": "accuracy", "must": "not_fail"},
                            ],
                        },
                        "canary": {
                            "steps": [10, 25, 50, 100],
                            "min_duration": 3,
                            "max_duration": 90,
                            "min_samples": 5,
                            # no power floor: a step advances on "not failing" alone
                            "criteria": [{"metric": "error_rate", "rule_out": []}],
                        },
                        "interval": 0.3,
                        "webhooks": hook,
                    },
                )
                first = int(good.id)
                wait_until(
                    lambda: (
                        client.status(first)["phase"] == "canary"
                        and client.status(first)["step_index"] >= 1
                    ),
                    120,
                    "rollout 1 in its second canary step",
                )
                leader = leader_of(db, ctls)
                before = lease_row(db)
                assert before is not None
                leader.kill()
                killed_at = time.monotonic()
                after = wait_for_token_above(db, before.token)
                print(
                    f"\nSIGKILL of the leader -> lease taken: {time.monotonic() - killed_at:.2f} s"
                )
                # a restarted controller (as a supervisor would) only follows
                planes.append(
                    ControlPlane.start(config, api=False, name="controller-restarted", timeout=240)
                )
                wait_until(
                    lambda: client.status(first)["phase"] == "promoted", 180, "rollout 1 promoted"
                )

                # 2: a candidate 15 points less accurate, rolled back in shadow
                worse = client.start_rollout(
                    "iris",
                    "bad",
                    models["bad"],
                    {
                        "shadow": {
                            "min_duration": 1,
                            "min_samples": 20,
                            "max_duration": 150,
                            "criteria": [{"metric": "accuracy"}],
                        },
                        "canary": {"steps": [10, 100], "min_duration": 1, "min_samples": 5,
                                   "criteria": [{"metric": "error_rate"}]},
                        "interval": 0.3,
                        "webhooks": hook,
                    },
                )  # fmt: skip
                second = int(worse.id)
                wait_until(
                    lambda: client.status(second)["phase"] == "rolled_back",
                    180,
                    "rollout 2 rolled back",
                )
                final = client.status(second)
                assert "accuracy" in final["reason"], final["reason"]
            traffic.stop()
            for gateway in cluster.gateways:
                gateway.stop()  # graceful: each flushes its log
            wait_until(
                lambda: (
                    len(receiver.events()) == len(events(db, first)) + len(events(db, second)) - 2
                ),
                30,
                "every delivery",
            )
            time.sleep(0.5)  # a late duplicate would arrive now
    finally:
        if traffic is not None:
            traffic.stop()
        for plane in planes:
            plane.stop()
        receiver.stop()

    rows1 = [e["kind"] for e in events(db, first)]
    advances = rows1.count("advance")
    kinds1 = ["created", "start", *["advance"] * advances, "promote", "promoted"]
    assert advances == 4  # every canary step once, none skipped across the takeover
    one = assert_exactly_once(db, receiver, first, kinds1)
    tokens = [e["leader_token"] for e in one[1:]]
    # the killed leader's writes are kept; after its death only newer holders wrote
    assert min(tokens) <= before.token and max(tokens) >= after.token
    assert_exactly_once(db, receiver, second, ["created", "start", "rollback", "rolled_back"])

    # every request answered through the load balancer has its row in the one log
    assert traffic is not None and len(traffic.answered) > 500
    with db.connect() as conn:
        logged = {
            r
            for (r,) in conn.execute(
                select(predictions.c.request_id).where(
                    predictions.c.role.in_(("stable", "canary", "baseline"))
                )
            )
        }
    missing = set(traffic.answered) - logged
    assert not missing, f"{len(missing)} of {len(traffic.answered)} answered requests not logged"
    # and the traffic was really spread: candidates served users on the way
    assert traffic.versions.get("v2", 0) > 0
