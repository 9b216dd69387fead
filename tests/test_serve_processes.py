"""`coalmine serve` honours `gateway.processes` (it ran one listener and said nothing): with
2, a child `coalmine gateway` runs two workers sharing the port; SIGTERM to serve drains
them and every answered request is in the log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import psutil
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.testing import LocalCoalmine, serve_estimator

X, Y = load_iris(return_X_y=True)


def _gateway_workers(serve_pid: int) -> list[psutil.Process]:
    tree = psutil.Process(serve_pid).children(recursive=True)
    group = [p for p in tree if "gateway" in " ".join(p.cmdline())]
    assert group, [p.cmdline() for p in tree]
    return [p for p in tree if p.ppid() == group[0].pid]


def test_serve_runs_the_configured_number_of_gateway_processes(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    answered = []
    with serve_estimator(model, "iris", "v1") as v1:
        cm = LocalCoalmine({"iris": {"v1": v1}}, workdir=tmp_path,
                           config={"gateway": {"processes": 2}})  # fmt: skip
        with cm:
            assert cm.pid is not None
            assert len(_gateway_workers(cm.pid)) == 2
            with httpx.Client(timeout=10) as http:
                for i in range(60):
                    r = http.post(cm.predict_url("iris"), json={"instances": [X[i].tolist()]})
                    assert r.status_code == 200
                    answered.append(r.headers["X-Request-ID"])
            # the control API runs in serve itself, beside the gateway's processes
            assert cm.client().models()[0]["model"] == "iris"
        assert cm.returncode == 0
    with sqlite3.connect(cm.db_path) as conn:
        logged = {r for (r,) in conn.execute("SELECT request_id FROM predictions")}
    assert set(answered) <= logged
