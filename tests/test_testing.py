"""coalmine.testing used the way a user's pipeline test would use it: real processes, a real
SQLite store, real traffic; a good candidate promoted, a bad one rolled back, all stopped."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import coalmine.testing
from coalmine import Client
from coalmine.client import CoalmineAPIError
from coalmine.config import ConfigError
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.spec import parse_spec
from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

X, Y = load_iris(return_X_y=True)
README = Path(__file__).resolve().parents[1] / "README.md"


def _refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname or "", parts.port or 0)) != 0


@pytest.mark.slow
def test_a_pipeline_promotes_a_good_candidate_and_rolls_back_a_bad_one(tmp_path: Path) -> None:
    current = LogisticRegression(max_iter=500).fit(X, Y)
    retrained = LogisticRegression(C=0.5, max_iter=500).fit(X, Y)
    # sees the sepals only: about 15 points less accurate
    worse = make_pipeline(
        ColumnTransformer([("sepal", "passthrough", [0, 1])]), LogisticRegression(max_iter=500)
    ).fit(X, Y)

    with (
        serve_estimator(current, "iris", "v1") as v1,
        serve_estimator(retrained, "iris", "v2") as v2,
        serve_estimator(worse, "iris", "v3") as v3,
    ):
        with LocalCoalmine({"iris": {"v1": v1}}, workdir=tmp_path) as cm:
            with pytest.raises(CoalmineAPIError) as denied, Client(cm.api_url, "wrong") as c:
                c.models()
            assert denied.value.status in (401, 403)
            client = cm.client()
            with Traffic(cm.gateway_url, "iris", X, Y, rate=100) as traffic:
                good = client.start_rollout("iris", "v2", v2.url, fast_spec())
                final = good.wait(timeout=90, poll_s=0.3)
                assert final["phase"] == "promoted", (final, cm.logs()[-2000:])
                assert client.model("iris")["stable"] == "v2"

                bad = client.start_rollout("iris", "v3", v3.url, fast_spec())
                final = bad.wait(timeout=90, poll_s=0.3)
                assert final["phase"] == "rolled_back", (final, cm.logs()[-2000:])
                assert "accuracy" in final["reason"] and "FAIL" in final["reason"]
            assert client.model("iris")["stable"] == "v2"
            urls = [cm.gateway_url, cm.api_url]

        # everything stopped, cleanly, and the prediction log was flushed on the way out
        assert cm.returncode == 0 and not cm.running
        assert all(_refuses_connections(u) for u in urls)
        assert traffic.statuses == {200: traffic.sent} and traffic.sent > 200
        assert traffic.versions["v2"] > 0 and "v3" not in traffic.versions  # shadow only
        with sqlite3.connect(cm.db_path) as db:
            answered = db.execute(
                "SELECT count(*) FROM predictions WHERE role IN ('stable', 'canary')"
            ).fetchone()[0]
            labels = db.execute("SELECT count(*) FROM feedback").fetchone()[0]
        assert answered == traffic.sent
        assert labels == traffic.labelled == traffic.sent and traffic.label_errors == 0
    assert all(h.process.poll() is not None for h in (v1, v2, v3))


def test_a_configuration_coalmine_refuses_fails_the_start_with_the_reason() -> None:
    cm = LocalCoalmine(
        {"iris": {"v1": "http://127.0.0.1:9"}}, config={"gateway": {"processes": -1}}
    )
    with pytest.raises(RuntimeError, match=r"did not start[\s\S]*gateway\.processes"):
        cm.start()
    assert not cm.running and cm.returncode == 2
    assert not cm.workdir.exists()  # its own temporary directory is removed


def test_an_instance_never_stopped_is_killed_when_its_interpreter_exits() -> None:
    script = (
        "from coalmine.testing import LocalCoalmine\n"
        "cm = LocalCoalmine({'iris': {'v1': 'http://127.0.0.1:9'}}).start()\n"
        "print(cm.pid, cm.workdir, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    pid, workdir = out.stdout.split()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    shutil.rmtree(workdir, ignore_errors=True)


def test_local_coalmine_needs_a_model_with_a_version() -> None:
    with pytest.raises(ValueError, match="at least one version"):
        LocalCoalmine({"iris": {}})


def test_fast_spec_merges_overrides_into_the_fast_defaults() -> None:
    spec = fast_spec(canary={"steps": [10, 100]}, interval=0.5)
    assert spec["canary"]["steps"] == [10, 100]
    assert spec["canary"]["min_duration"] == 1 and spec["shadow"]["min_samples"] == 20
    assert spec["interval"] == 0.5
    assert fast_spec()["canary"]["steps"] == [50, 100]  # the defaults are not mutated
    parsed = parse_spec(spec)
    shadow = {c.metric: c.must for c in build_criteria(parsed, "shadow")}
    assert shadow == {"error_rate": "not_fail", "accuracy": "pass"}


def test_fast_spec_for_regression_judges_mae() -> None:
    spec = parse_spec(fast_spec("regression"))
    assert [c.metric for c in build_criteria(spec, "shadow", "regression")] == [
        "error_rate",
        "mae",
    ]


def test_fast_spec_refuses_an_invalid_override_naming_the_field() -> None:
    with pytest.raises(ConfigError) as refused:
        fast_spec(canary={"steps": [50, 10]})
    assert any(path.startswith("canary.steps") for path, _ in refused.value.errors)
    with pytest.raises(ValueError, match="task"):
        fast_spec("ranking")


def test_traffic_refuses_labels_that_do_not_match_the_rows() -> None:
    with pytest.raises(ValueError, match="as long as X"):
        Traffic("http://127.0.0.1:9", "iris", X, Y[:-1])


def test_the_public_names_are_the_documented_ones() -> None:
    section = README.read_text().split("## Testing your pipeline", 1)[1].split("\n## ", 1)[0]
    imported = re.search(r"from coalmine\.testing import ([\w, ]+)", section)
    assert imported is not None
    assert sorted(imported.group(1).replace(" ", "").split(",")) == sorted(coalmine.testing.__all__)
