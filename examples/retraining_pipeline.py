"""The last steps of a retraining pipeline: retrain, validate offline, register, roll out, act.

    # against a running Coalmine (coalmine serve --config ...):
    COALMINE_API_URL=http://127.0.0.1:8900 COALMINE_TOKEN=... \\
        python examples/retraining_pipeline.py --model digits --version v7

    # self-contained on one machine: starts the current model, `coalmine serve` and some
    # traffic with late labels, then runs the pipeline against them
    python examples/retraining_pipeline.py --local

Steps:
1. retrain a scikit-learn classifier on the old data plus the new batch;
2. validate it offline on a holdout: it must reach an absolute floor and must not be worse
   than the current model by more than a point — otherwise stop here, nothing deployed;
3. register it: save the artefact and serve it (`coalmine serve-model`, its own process);
4. roll it out with the SDK (shadow, then canary steps) and follow the events;
5. act on the outcome: promoted → keep the new server and record the champion;
   rolled back → stop the candidate's server and fail the pipeline with the reason.

Exit status: 0 promoted, 1 rejected (offline or online), 2 error — like `rollout --wait`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from coalmine import Client
from coalmine.client import TERMINAL_PHASES, CoalmineAPIError
from coalmine.modelserver import ModelServerHandle, start_model_server

ACCURACY_FLOOR = 0.90
MAX_OFFLINE_DROP = 0.01

# Short steps so the example finishes in a minute or two; production specs use minutes.
SPEC: dict[str, Any] = {
    "shadow": {
        "min_duration": "5s",
        "min_samples": 100,
        "max_duration": "2m",
        "criteria": [{"metric": "error_rate"}, {"metric": "accuracy"}],
    },
    "canary": {
        "steps": [5, 25, 50, 100],
        "min_duration": "3s",
        "min_samples": 20,
        "max_duration": "2m",
        "criteria": [
            {"metric": "error_rate"},
            {"metric": "accuracy"},
            {"metric": "latency_p95", "max_ratio": 2.0},
        ],
    },
    "interval": 1,
}


def load_data(seed: int) -> dict[str, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x_old, x_rest, y_old, y_rest = train_test_split(x, y, train_size=0.1, random_state=seed)
    x_new, x_hold, y_new, y_hold = train_test_split(
        x_rest, y_rest, train_size=0.6, random_state=seed
    )
    return {
        "x_old": x_old,
        "y_old": y_old,
        "x_new": x_new,
        "y_new": y_new,
        "x_hold": x_hold,
        "y_hold": y_hold,
    }


def train(x: np.ndarray, y: np.ndarray) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)


def validate(candidate: Pipeline, current: Any, data: dict[str, np.ndarray]) -> tuple[bool, str]:
    """Offline gate: absolute floor, and no worse than the current model by > 1 point."""
    acc_new = float(candidate.score(data["x_hold"], data["y_hold"]))
    acc_cur = float(current.score(data["x_hold"], data["y_hold"]))
    text = f"holdout accuracy {acc_new:.3f} (current {acc_cur:.3f})"
    if acc_new < ACCURACY_FLOOR:
        return False, f"{text} is below the floor {ACCURACY_FLOOR}"
    if acc_new < acc_cur - MAX_OFFLINE_DROP:
        return False, f"{text} is more than {MAX_OFFLINE_DROP:.0%} below the current model"
    return True, text


def print_event(event: dict[str, Any]) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    print(f"  {stamp} {event['from_phase']:>9} → {event['to_phase']:<12} {event['reason']}")


def follow(client: Client, rollout_id: int, timeout: float) -> dict[str, Any]:
    """Print events until the rollout ends or is held for a person."""
    deadline, seen = time.monotonic() + timeout, 0
    while True:
        for event in client.events(rollout_id, seen):
            seen = event["id"]
            print_event(event)
        status = client.status(rollout_id)
        if status["phase"] in TERMINAL_PHASES or status["phase"] == "paused":
            for event in client.events(rollout_id, seen):
                print_event(event)
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"rollout {rollout_id} still {status['phase']}")
        time.sleep(1.0)


def run_pipeline(
    args: argparse.Namespace,
    client: Client,
    data: dict[str, np.ndarray],
    current: Any,
    workdir: Path,
) -> int:
    # 1. retrain on old + new data
    candidate = train(
        np.vstack([data["x_old"], data["x_new"]]), np.concatenate([data["y_old"], data["y_new"]])
    )
    # 2. validate offline
    ok, detail = validate(candidate, current, data)
    print(f"offline validation: {detail}: {'OK' if ok else 'REJECTED'}")
    if not ok:
        return 1
    # 3. register: the artefact, and a server for it
    artefact = workdir / f"{args.model}-{args.version}.joblib"
    joblib.dump(candidate, artefact)
    server = start_model_server(artefact, name=args.model, version=args.version, log_dir=workdir)
    print(f"serving {args.version} at {server.url}")
    # 4. roll it out and follow it
    try:
        rollout = client.start_rollout(args.model, args.version, server.url, args.spec or SPEC)
    except CoalmineAPIError as exc:
        server.stop()
        print(f"rollout refused: {exc}", file=sys.stderr)
        return 2
    print(f"rollout #{rollout.id} started")
    final = follow(client, rollout.id, args.timeout)
    if final["phase"] == "paused":
        # on_inconclusive: hold (or on_failure: pause) hands the decision to a person
        print(
            f"HELD for a person (coalmine rollout promote|abort {rollout.id}): "
            f"{final['reason'] or ''}",
            file=sys.stderr,
        )
        return 1
    # 5. act on the outcome
    if final["phase"] == "promoted":
        (workdir / "champion.json").write_text(
            json.dumps(
                {
                    "model": args.model,
                    "version": args.version,
                    "artefact": str(artefact),
                    "url": server.url,
                    "rollout": rollout.id,
                }
            )
        )
        # the candidate's server now serves production: it keeps running after we exit
        print(
            f"PROMOTED: {args.version} is the champion, served by pid {server.pid} "
            f"({workdir / 'champion.json'})"
        )
        if args.local:  # --local tears the whole machine down, the champion included
            server.stop()
        return 0
    server.stop()
    print(f"NOT PROMOTED ({final['phase']}): {final['reason']}", file=sys.stderr)
    return 1


# -- --local: everything on this machine ---------------------------------------------------


def _traffic(gateway: str, model: str, data: dict[str, np.ndarray], stop: threading.Event) -> None:
    """Requests at ~80/s with sticky users, and their labels 1 s later (late ground truth)."""
    import aiohttp

    async def main() -> None:
        rng = random.Random(0)
        labels: list[tuple[float, str, int]] = []
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                rid = uuid.uuid4().hex
                body = {"instances": [data["x_hold"][i].tolist()]}
                headers = {"X-Request-ID": rid, "X-User-Id": f"u{rng.randrange(500)}"}
                try:
                    async with session.post(
                        f"{gateway}/v1/models/{model}:predict", json=body, headers=headers
                    ) as r:
                        await r.read()
                except aiohttp.ClientError:
                    return
                labels.append((time.monotonic() + 1.0, rid, int(data["y_hold"][i])))

            tasks: set[asyncio.Task[None]] = set()
            last_label = time.monotonic()
            while not stop.is_set():
                t = asyncio.create_task(one(rng.randrange(len(data["y_hold"]))))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                await asyncio.sleep(1 / 80)
                if time.monotonic() - last_label > 0.5:
                    last_label = time.monotonic()
                    due = [x for x in labels if x[0] <= last_label]
                    labels[:] = [x for x in labels if x[0] > last_label]
                    if due:
                        items = [{"request_id": rid, "label": y} for _, rid, y in due]
                        try:
                            async with session.post(
                                f"{gateway}/v1/feedback", json={"items": items}
                            ) as r:
                                await r.read()
                        except aiohttp.ClientError:
                            pass

    asyncio.run(main())


def run_local(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-pipeline-"))
    data = load_data(args.seed)
    current = train(data["x_old"], data["y_old"])
    joblib.dump(current, workdir / "current.joblib")
    stable: ModelServerHandle = start_model_server(
        workdir / "current.joblib", name=args.model, version="v1", log_dir=workdir
    )
    token = uuid.uuid4().hex
    config = workdir / "coalmine.yaml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "gateway": {"port": 0},
                "api": {"port": 0, "token": token},
                "store": {"url": f"sqlite:///{workdir / 'coalmine.db'}"},
                "models": [
                    {
                        "name": args.model,
                        "versions": [{"name": "v1", "url": stable.url}],
                        "routing": {"stable": "v1"},
                    }
                ],
            }
        )
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "coalmine.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    urls: dict[str, str] = {}
    assert serve.stdout is not None
    while len(urls) < 2:
        line = serve.stdout.readline()
        if not line:
            print("coalmine serve did not start", file=sys.stderr)
            return 2
        if m := re.match(r"coalmine serve: (gateway|api) (\S+)", line):
            urls[m.group(1)] = m.group(2)
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(urls["gateway"], args.model, data, stop))
    traffic.start()
    try:
        with Client(urls["api"], token) as client:
            return run_pipeline(args, client, data, current, workdir)
    finally:
        stop.set()
        traffic.join(10)
        serve.terminate()
        serve.wait(30)
        stable.stop()
        print(f"(work directory: {workdir})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--version", default="v2")
    parser.add_argument("--spec", type=Path, default=None, help="rollout spec YAML")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--local", action="store_true", help="start everything locally")
    parser.add_argument("--current", type=Path, help="current model artefact (offline gate)")
    args = parser.parse_args()
    if args.local:
        return run_local(args)
    if args.current is None:
        parser.error("--current MODEL.joblib is needed to validate against (or use --local)")
    data = load_data(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="coalmine-pipeline-"))
    with Client() as client:  # $COALMINE_API_URL, $COALMINE_TOKEN
        return run_pipeline(args, client, data, joblib.load(args.current), workdir)


if __name__ == "__main__":
    sys.exit(main())
