"""Coalmine gateway in five steps, with real processes (run: python examples/gateway_quickstart.py).

1. train three scikit-learn models on iris and serve each with `coalmine serve-model`;
2. start `coalmine gateway` in front of them: v1 stable, v2 a 20% sticky canary, v3 a shadow;
3. send 300 predictions from 100 users through the gateway (KServe V1 protocol);
4. send the true labels to `POST /v1/feedback`;
5. stop the gateway (SIGTERM flushes the log) and print what the log holds per version.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import joblib
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sqlalchemy import text

from coalmine.modelserver import start_model_server
from coalmine.store.engine import open_engine


def post(url: str, payload: object, headers: dict[str, str] | None = None) -> tuple[dict, dict]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), dict(response.headers)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coalmine-quickstart-"))
    iris = load_iris()
    x, y = iris.data, iris.target
    models = {
        "v1": LogisticRegression(max_iter=500).fit(x, y),
        "v2": DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, y),
        "v3": DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y),
    }
    servers = []
    for version, model in models.items():
        joblib.dump(model, work / f"{version}.joblib")
        servers.append(start_model_server(work / f"{version}.joblib", name="iris", version=version))
    config = yaml.safe_load(Path(__file__).with_name("gateway.yaml").read_text())
    config["gateway"]["port"] = 0
    config["store"]["url"] = f"sqlite:///{work / 'coalmine.db'}"
    config["models"][0]["versions"] = [{"name": s.version, "url": s.url} for s in servers]
    config["models"][0]["routing"]["canary_weight"] = 20
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "gateway", "--config", str(work / "gateway.yaml")],
        stdout=subprocess.PIPE,
    )
    try:
        line = gateway.stdout.readline().decode()  # type: ignore[union-attr]
        url = line.split("listening on ")[1].split()[0]
        print(f"gateway at {url}; models and log in {work}")
        served: dict[str, int] = {}
        for i in range(300):
            row = i % len(x)
            _, headers = post(
                f"{url}/v1/models/iris:predict",
                {"instances": [list(x[row])]},
                {"X-User-Id": f"user-{i % 100}", "X-Request-ID": f"req-{i}", "X-Region": "eu"},
            )
            served[headers["X-Model-Version"]] = served.get(headers["X-Model-Version"], 0) + 1
        print("served by:", served)
        # feedback joins logged calls, and the log is written in batches off the request
        # path: give the last batch (flush_interval_s) time to land
        time.sleep(1.0)
        answer, _ = post(
            f"{url}/v1/feedback",
            [{"request_id": f"req-{i}", "label": int(y[i % len(x)])} for i in range(300)],
        )
        print(f"feedback accepted: {answer['accepted']}, errors: {len(answer['errors'])}")
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        for server in servers:
            server.stop()
    engine = open_engine(config["store"]["url"])
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT p.version, p.role, count(*) AS calls, "
                "avg(p.latency_ms) AS ms, "
                "sum(f.label = json_extract(p.prediction, '$[0]')) AS hits "
                "FROM predictions p LEFT JOIN feedback f ON f.request_id = p.request_id "
                "GROUP BY p.version, p.role ORDER BY p.version"
            )
        ).all()
    print(f"{'version':8} {'role':7} {'calls':>6} {'mean ms':>8} {'accuracy':>9}")
    for r in rows:
        print(f"{r.version:8} {r.role:7} {r.calls:6d} {r.ms:8.2f} {(r.hits or 0) / r.calls:9.2%}")
    engine.dispose()


if __name__ == "__main__":
    main()
