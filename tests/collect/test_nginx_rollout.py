"""The acceptance run: a rollout driven through the `nginx` provider on this machine.

Real parts only: the Debian nginx carrying the traffic (the controller writes its file,
checks it with nginx -t and reloads it), `coalmine serve` (controller, control API with the
batch ingest, and its gateway port for labels only), `coalmine serve-model` processes, and
a logging sidecar process in front of each (the guide's route for predictions: nginx
discards the mirror's answer, so the sidecar reports both versions' calls through the batch
ingest). The shadow phase is nginx's `mirror`; canary steps change nginx's split; a bad
candidate is rolled back with its reason and nginx goes back to stable alone.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.client import TERMINAL_PHASES
from coalmine.config import StickyKey
from coalmine.providers.nginx import NginxProvider
from coalmine.routing.state import RouteState
from coalmine.testing import LocalCoalmine, fast_spec, serve_estimator
from tests.collect.nginx_stack import nginx_with
from tests.providers.nginx_harness import NGINX, free_port, placeholder_settings

X, Y = load_iris(return_X_y=True)
TOKEN = "nginx-acceptance-token"
STICKY = StickyKey(header="X-User-Id")


@contextmanager
def sidecar(upstream: str, version: str, api: str, log_dir: Path) -> Iterator[str]:
    port = free_port()
    with open(log_dir / f"sidecar-{version}.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "coalmine.collect.sidecar", "--listen", f"127.0.0.1:{port}",
             "--upstream", upstream, "--model", "iris", "--version", version, "--api", api,
             "--flush-s", "0.1"],
            stdout=subprocess.PIPE, stderr=err, env={**os.environ, "COALMINE_TOKEN": TOKEN},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert "listening" in line, (line, (log_dir / f"sidecar-{version}.log").read_text())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


class Users:
    """Clients calling the model through nginx; labels follow half a second later."""

    def __init__(self, nginx_port: int, feedback_url: str) -> None:
        self.port = nginx_port
        self.feedback_url = feedback_url
        self.rng = random.Random(11)
        self.stop = threading.Event()
        self.served: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.n = 0

    def _run(self) -> None:
        due: list[tuple[float, str, int]] = []
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        with httpx.Client(timeout=10) as labels:
            while not self.stop.is_set():
                i = self.rng.randrange(len(X))
                rid = f"n-{self.n}"
                self.n += 1
                body = json.dumps({"instances": [X[i].tolist()]})
                headers = {"X-User-Id": f"user{self.rng.randrange(300)}", "X-Request-Id": rid,
                           "Content-Type": "application/json"}  # fmt: skip
                try:
                    conn.request("POST", "/v1/models/iris:predict", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    continue
                self.statuses[response.status] += 1
                self.served[response.getheader("X-Model-Version", "?")] += 1
                if response.status == 200:
                    due.append((time.monotonic() + 0.5, rid, int(Y[i])))
                ready = [d for d in due if d[0] <= time.monotonic()]
                if len(ready) >= 25:
                    items = [{"request_id": r, "label": y} for _, r, y in ready]
                    labels.post(self.feedback_url, json={"items": items})
                    due = [d for d in due if d[0] > time.monotonic()]
        conn.close()

    def __enter__(self) -> Users:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(15)


def _splits(text: str) -> tuple[str, str]:
    """(canary share, mirror share) as the provider's file tells nginx."""
    split = text[
        text.index("$coalmine_iris_upstream {") : text.index(
            "}", text.index("$coalmine_iris_upstream {")
        )
    ]
    mirror = text[text.index("$coalmine_iris_mirror {") :]
    canary = re.search(r"(\S+) coalmine_iris_canary;", split)
    share = "0%" if canary is None else ("100%" if canary[1] == "*" else canary[1])
    mirrored = "100%" if "* 1;" in mirror else (re.search(r"(\S+%) 1;", mirror) or [None, "0%"])[1]
    return share, mirrored


def _follow(cm: LocalCoalmine, rollout_id: int, include: Path) -> tuple[dict[str, Any], list]:
    """Wait for the rollout's end, noting each (phase, nginx canary share, mirror share)."""
    client = cm.client()
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        status = client.status(rollout_id)
        state = (status["phase"], *_splits(include.read_text()))
        if not seen or seen[-1] != state:
            seen.append(state)
        if status["phase"] in TERMINAL_PHASES:
            return status, seen
        time.sleep(0.1)
    raise AssertionError(f"rollout {rollout_id} did not end: {seen}\n{cm.logs()[-3000:]}")


@pytest.mark.slow
@pytest.mark.skipif(not NGINX.exists(), reason=f"{NGINX} is not installed")
def test_a_rollout_through_nginx_shadow_canary_promote_then_a_bad_one_rolled_back(
    tmp_path: Path,
) -> None:
    good = LogisticRegression(max_iter=500).fit(X, Y)
    api = f"http://127.0.0.1:{free_port()}"
    with (
        serve_estimator(good, "iris", "v1") as m1,
        serve_estimator(good, "iris", "v2") as m2,
        serve_estimator(good, "iris", "v3", flip_rate=0.6, seed=2) as m3,
        sidecar(m1.url, "v1", api, tmp_path) as s1,
        sidecar(m2.url, "v2", api, tmp_path) as s2,
        sidecar(m3.url, "v3", api, tmp_path) as s3,
    ):
        first = NginxProvider("iris", STICKY, placeholder_settings(tmp_path))
        start = first.render(RouteState("iris", "v1", urls={"v1": s1}))
        with nginx_with(tmp_path, start, first.location_snippet(), "") as nginx:
            traffic = {"provider": "nginx", **{k: str(v) for k, v in (
                ("config_path", nginx.settings.config_path),
                ("main_config", nginx.settings.main_config),
                ("pid_file", nginx.settings.pid_file),
                ("nginx_binary", nginx.settings.nginx_binary),
                ("prefix", nginx.settings.prefix))}}  # fmt: skip
            config = {
                "api": {"port": int(api.rsplit(":", 1)[1])},
                "models": [{"name": "iris", "task": "classification",
                            "versions": [{"name": "v1", "url": s1}],
                            "routing": {"stable": "v1"}, "traffic": traffic}],
            }  # fmt: skip
            include = nginx.settings.config_path
            with LocalCoalmine({"iris": {"v1": s1}}, config=config, token=TOKEN,
                               workdir=tmp_path / "cm") as cm:  # fmt: skip
                client = cm.client()
                with Users(nginx.port, f"{cm.gateway_url}/v1/feedback") as users:
                    spec = fast_spec(canary={"steps": [30, 100]})
                    good_rollout = client.start_rollout("iris", "v2", s2, spec=spec)
                    promoted, seen_good = _follow(cm, good_rollout.id, include)
                    served_by_good = Counter(users.served)
                    bad_rollout = client.start_rollout("iris", "v3", s3, spec=fast_spec())
                    rolled_back, seen_bad = _follow(cm, bad_rollout.id, include)
                    time.sleep(1.0)  # a last second of traffic on the restored split
                    final_split = _splits(include.read_text())
                db = cm.db_path
                assert promoted["phase"] == "promoted", (promoted, seen_good, cm.logs()[-3000:])
                assert rolled_back["phase"] == "rolled_back", (rolled_back, seen_bad)
                with sqlite3.connect(db) as conn:
                    rows = conn.execute(
                        "SELECT rollout_id, version, role, count(*), count(prediction) "
                        "FROM predictions GROUP BY 1, 2, 3"
                    ).fetchall()
                    pairs = dict(conn.execute(
                        "SELECT s.rollout_id, count(*) FROM predictions s JOIN predictions p "
                        "ON s.request_id = p.request_id AND s.rollout_id = p.rollout_id "
                        "WHERE s.role = 'shadow' AND p.role = 'stable' GROUP BY 1"
                    ).fetchall())  # fmt: skip
    report = {
        "good": seen_good, "bad": seen_bad, "reason": rolled_back.get("reason"),
        "served_during_good": dict(served_by_good), "statuses": dict(users.statuses),
        "rows": rows, "final_split": final_split,
    }  # fmt: skip
    print(json.dumps(report, indent=1, default=str))
    # the shadow was nginx's mirror, at 100%, and both versions' predictions were collected
    assert ("shadow", "0%", "100%") in seen_good, report
    by = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
    shadow_rows, with_prediction = by[(good_rollout.id, "v2", "shadow")]
    assert shadow_rows >= 20 and with_prediction == shadow_rows, report
    assert pairs.get(good_rollout.id, 0) >= 20, report
    # canary steps changed nginx's split: 30% then 100%, then v2 became stable alone
    canary_shares = [share for phase, share, _ in seen_good if phase == "canary"]
    assert "30.00%" in canary_shares and "100%" in canary_shares, report
    assert by[(good_rollout.id, "v2", "canary")][0] >= 10, report
    assert served_by_good["v2"] > 0 and served_by_good["v1"] > 0, report
    # the bad candidate: rolled back in shadow on its accuracy, nginx back to v2 alone
    assert "accuracy" in str(rolled_back.get("reason")), report
    assert by[(bad_rollout.id, "v3", "shadow")][1] >= 20, report
    assert final_split == ("0%", "0%"), report
    assert set(users.statuses) == {200}, report
