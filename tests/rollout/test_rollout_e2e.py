"""Rollouts end to end: real model servers, `coalmine serve` processes, real traffic, labels.

Steps last about a second and need a handful of samples, so each test takes seconds; the
analysis engine is the real one (EngineJudge over the prediction log).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine import Client
from coalmine.rollout.webhooks import SIGNATURE_HEADER, verify_signature

pytestmark = pytest.mark.slow

TOKEN = "e2e-token"
SECRET = "hook-secret"

FAST_CANARY: dict[str, Any] = {
    "min_duration": 1,
    "max_duration": 60,
    "min_samples": 5,
    "criteria": [{"metric": "error_rate"}],
}


def cli(
    api_url: str, *args: str, token: str = TOKEN, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COALMINE_API_URL": api_url, "COALMINE_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "coalmine.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def route(db: Path) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT stable, canary, canary_weight_bp, shadow, mirror_bp FROM routes "
            "WHERE model='iris'"
        ).fetchone()


def rollout_row(db: Path, rollout_id: int) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT phase, step_index, canary_weight_bp, mirror_bp, version FROM rollouts "
            "WHERE id=?",
            (rollout_id,),
        ).fetchone()


def calls_after(db: Path, version: str, ts: float) -> int:
    """Logged calls to `version` that started after `ts`."""
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM predictions WHERE model='iris' AND version=? AND ts > ?",
                (version, ts),
            ).fetchone()[0]
        )


def test_good_candidate_is_promoted_through_every_step(
    coalmine_factory: Any, traffic_factory: Any, model_servers: dict[str, str], tmp_path: Path
) -> None:
    cm = coalmine_factory()
    traffic = traffic_factory(cm.gateway_url)
    spec = {
        "shadow": {
            "min_duration": 1,
            "min_samples": 20,
            "criteria": [{"metric": "error_rate"}, {"metric": "accuracy", "must": "not_fail"}],
        },
        "canary": {**FAST_CANARY, "steps": [10, 50, 100]},
        "interval": 0.3,
        "webhooks": [{"url": traffic.webhook_url, "secret": SECRET}],
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))

    # a wrong token is an error (exit 2), and starts nothing
    denied = cli(
        cm.api_url,
        "rollout",
        "start",
        "iris",
        "--candidate",
        "v2",
        "--url",
        model_servers["v2"],
        token="wrong",
    )
    assert denied.returncode == 2 and "403" in denied.stderr

    done = cli(
        cm.api_url,
        "rollout",
        "start",
        "iris",
        "--candidate",
        "v2",
        "--url",
        model_servers["v2"],
        "--spec",
        str(spec_file),
        "--wait",
        "--poll",
        "0.3",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout

    with Client(cm.api_url, TOKEN) as client:
        [r] = client.rollouts("iris")
        assert r["phase"] == "promoted" and r["outcome"] == "promoted"
        events = client.events(r["id"])
    kinds = [e["kind"] for e in events]
    assert kinds == ["created", "start", "advance", "advance", "advance", "promote", "promoted"]
    assert [e["canary_weight_bp"] for e in events if e["kind"] == "advance"] == [1000, 5000, 10000]
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert all(e["evidence"] == "not_fail" for e in events if e["kind"] == "advance")
    # the candidate is stable now; the previous one is kept for `coalmine rollback`
    assert route(cm.db)[:3] == ("v2", None, 0)
    assert traffic.versions.get("v2", 0) > 0

    rb = cli(cm.api_url, "rollback", "iris")
    assert rb.returncode == 0, rb.stderr
    assert route(cm.db)[0] == "v1"

    # every transition reached the webhook, signed, `coalmine rollback` included
    deadline = time.monotonic() + 10
    while len(traffic.webhooks) < 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    bodies = []
    for headers, body in traffic.webhooks:
        assert verify_signature(SECRET, body, headers.get(SIGNATURE_HEADER))
        assert not verify_signature("other", body, headers.get(SIGNATURE_HEADER))
        bodies.append(json.loads(body))
    assert sorted(b["seq"] for b in bodies) == list(range(2, 9))
    assert {b["kind"] for b in bodies} == {
        "start", "advance", "promote", "promoted", "model_rollback",
    }  # fmt: skip


def test_less_accurate_candidate_is_rolled_back_with_the_reason(
    coalmine_factory: Any, traffic_factory: Any, model_servers: dict[str, str]
) -> None:
    cm = coalmine_factory()
    traffic_factory(cm.gateway_url, rate=150)
    spec = {
        "shadow": {
            "min_duration": 1,
            "min_samples": 20,
            "max_duration": 90,
            "criteria": [{"metric": "accuracy"}],
        },
        "canary": FAST_CANARY,
        "interval": 0.3,
    }
    with Client(cm.api_url, TOKEN) as client:
        rollout = client.start_rollout("iris", "bad", model_servers["bad"], spec)
        final = rollout.wait(timeout=90, poll_s=0.3)
        events = rollout.events()
    assert final["phase"] == "rolled_back", final
    assert "accuracy" in final["reason"] and "FAIL" in final["reason"]
    # it never reached users: rolled back from shadow, mirror off
    assert [e["kind"] for e in events][-2:] == ["rollback", "rolled_back"]
    assert all(e["canary_weight_bp"] == 0 for e in events)
    rollback = next(e for e in events if e["kind"] == "rollback")
    assert rollback["from_phase"] == "shadow" and rollback["judgement"]["verdict"] == "FAIL"
    assert route(cm.db) == ("v1", None, 0, None, 0)
    # the mirror stopped within a second of the decision (the gateway polls every 0.5 s)
    time.sleep(1.5)
    assert calls_after(cm.db, "bad", rollback["ts"] + 1.0) == 0


def test_fast_guard_trip_rolls_the_canary_back(
    coalmine_factory: Any, traffic_factory: Any, model_servers: dict[str, str], tmp_path: Path
) -> None:
    cm = coalmine_factory()
    traffic_factory(cm.gateway_url, rate=150)
    spec = {
        "shadow": {"enabled": False},
        "canary": {**FAST_CANARY, "steps": [50, 100], "min_duration": 30, "guard_failures": 3},
        "interval": 0.3,
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    done = cli(
        cm.api_url,
        "rollout",
        "start",
        "iris",
        "--candidate",
        "flaky",
        "--url",
        model_servers["flaky"],
        "--spec",
        str(spec_file),
        "--wait",
        "--poll",
        "0.3",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    with Client(cm.api_url, TOKEN) as client:
        [r] = client.rollouts("iris")
        events = client.events(r["id"])
    assert r["phase"] == "rolled_back" and r["reason"].startswith("fast guard")
    rollback = next(e for e in events if e["kind"] == "rollback")
    assert rollback["from_phase"] == "canary" and rollback["canary_weight_bp"] == 0
    assert route(cm.db) == ("v1", None, 0, None, 0)
    time.sleep(1.5)
    assert calls_after(cm.db, "flaky", rollback["ts"] + 1.0) == 0


def test_409_gate_approve_pause_resume_and_manual_promote(
    coalmine_factory: Any, traffic_factory: Any, model_servers: dict[str, str]
) -> None:
    cm = coalmine_factory()
    traffic_factory(cm.gateway_url, rate=60)
    spec = {
        "shadow": {"enabled": False},
        "canary": {**FAST_CANARY, "min_duration": 600, "max_duration": 900, "approval_before": [1]},
        "interval": 0.3,
    }
    with Client(cm.api_url, TOKEN) as client:
        first = client.start_rollout("iris", "v2", model_servers["v2"], spec)
    second = cli(
        cm.api_url, "rollout", "start", "iris", "--candidate", "bad", "--url", model_servers["bad"]
    )
    assert second.returncode == 2
    assert "409" in second.stderr and f"#{first.id}" in second.stderr
    # the gate before the 1% step holds it in pending until a person approves
    status = cli(cm.api_url, "rollout", "status", "iris", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["phase"] == "pending"
    assert json.loads(status.stdout)["awaiting_approval"] == 1
    approved = cli(cm.api_url, "rollout", "approve", "iris")
    assert approved.returncode == 0, approved.stderr
    with Client(cm.api_url, TOKEN) as client:
        deadline = time.monotonic() + 10
        while client.status(first.id)["phase"] != "canary" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert route(cm.db)[1:3] == ("v2", 100)
        paused = client.pause(first.id, "looking at a dashboard")
        assert paused["phase"] == "paused" and paused["canary_weight"] == 1
        assert client.resume(first.id)["phase"] == "canary"
    # step 1 needs 10 minutes; a person promotes now instead
    out = cli(cm.api_url, "rollout", "promote", "iris", "--reason", "verified by hand")
    assert out.returncode == 0, out.stderr
    with Client(cm.api_url, TOKEN) as client:
        final = client.wait(first.id, timeout=30, poll_s=0.2)
        events = client.events(first.id)
        metrics = client._http.get("/metrics").text
    assert final["phase"] == "promoted"
    assert [e["kind"] for e in events] == [
        "created",
        "approve",
        "advance",
        "pause",
        "resume",
        "promote",
        "promoted",
    ]
    promote = next(e for e in events if e["kind"] == "promote")
    assert promote["evidence"] == "manual" and promote["reason"] == "verified by hand"
    assert route(cm.db)[:2] == ("v2", None)
    assert 'coalmine_rollouts_total{outcome="promoted"} 1.0' in metrics
    assert 'coalmine_rollout_canary_weight_percent{model="iris"} 0.0' in metrics


@pytest.mark.long  # ~1 min; tests/ha SIGKILLs a leader mid-rollout in make test
def test_sigkill_of_the_controller_resumes_at_the_same_step(
    coalmine_factory: Any, traffic_factory: Any, model_servers: dict[str, str]
) -> None:
    cm = coalmine_factory(split=True)
    traffic_factory(cm.gateway_url, rate=120)
    steps = [5, 10, 20, 30, 50, 100]
    spec = {
        "shadow": {"enabled": False},
        "canary": {**FAST_CANARY, "steps": steps, "min_duration": 1.5},
        "interval": 0.2,
    }
    with Client(cm.api_url, TOKEN) as client:
        rollout_id = client.start_rollout("iris", "v2", model_servers["v2"], spec).id
    kills = 0
    for delay in (1.1, 2.3, 1.7):
        time.sleep(delay)
        cm.kill_control()
        kills += 1
        before = rollout_row(cm.db, rollout_id)
        weights_before = route(cm.db)
        time.sleep(0.5)
        # nothing moves while the controller is dead, and the route matches the rollout
        assert rollout_row(cm.db, rollout_id) == before
        if before[0] == "canary":
            assert weights_before[1:3] == ("v2", before[2])
        cm.restart_control()
        if before[0] == "promoted":
            break
    with Client(cm.api_url, TOKEN) as client:
        final = client.wait(rollout_id, timeout=90, poll_s=0.3)
        events = client.events(rollout_id)
    assert kills >= 2
    assert final["phase"] == "promoted", final
    # every step exactly once, in order; the event sequence has no gap and no repeat
    advances = [e["canary_weight_bp"] for e in events if e["kind"] == "advance"]
    assert advances == [w * 100 for w in steps]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # and each step lasted at least its minimum, timed from persisted timestamps
    times = [e["ts"] for e in events if e["kind"] in ("advance", "promote")]
    assert all(b - a >= 1.5 for a, b in itertools.pairwise(times))
