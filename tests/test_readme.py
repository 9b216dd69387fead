"""Every code block of README.md runs as a test, as a reader would run it.

Each block is matched to exactly one runner below by its content; a block no runner claims
fails `test_every_block_has_a_runner`, so a new example cannot be added untested.

- python blocks run verbatim (`exec`) with the names they leave to the reader (data arrays,
  a fitted model, the token) defined, against real processes: `coalmine serve` through
  `LocalCoalmine`, scikit-learn models served by `serve_estimator`. The only rewrite is the
  address of the API and of the candidate, which the block spells as the defaults
  (127.0.0.1:8900, :9004) and the test gets from free ports.
- yaml blocks are the example files, byte for byte, and they validate.
- bash blocks: `coalmine validate` and the token one-liner run for real; the long-running
  `coalmine serve` and `rollout start --wait` are checked against the CLI (the command exists
  and takes every option shown) — they run for real in tests/test_testing.py and the demo.
- text blocks: the diagram is prose; the layout's paths must exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coalmine.config import load_config
from coalmine.rollout.spec import parse_spec
from coalmine.testing import LocalCoalmine, serve_estimator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COALMINE = [sys.executable, "-m", "coalmine.cli"]


def _blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [
        (m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", README.read_text(), re.M | re.S)
    ]


def _commands(body: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]


# -- runners ------------------------------------------------------------------------------


def _run_make_block(body: str, tmp_path: Path) -> None:
    targets = [shlex.split(c)[1] for c in _commands(body)]
    assert targets == ["demo", "test"]
    dry = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr


def _run_cli_block(body: str, tmp_path: Path) -> None:
    commands = _commands(body)
    assert commands[0].startswith("export COALMINE_TOKEN=$(python -c")
    inner = re.search(r'\$\(python -c "(.*)"\)', commands[0])
    assert inner is not None
    token = subprocess.run(
        [sys.executable, "-c", inner.group(1)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(token) >= 24
    for command in commands[1:]:
        argv = shlex.split(command)
        assert argv[0] == "coalmine", command
        if argv[1] == "validate":
            done = subprocess.run([*COALMINE, *argv[1:]], cwd=ROOT, capture_output=True, text=True)
            assert done.returncode == 0 and "valid" in done.stdout, done.stdout + done.stderr
            continue
        words = [a for a in argv[1:] if not a.startswith("-")][:2]
        sub = words[:2] if words[0] == "rollout" else words[:1]
        shown = subprocess.run(
            [*COALMINE, *sub, "--help"], cwd=ROOT, capture_output=True, text=True,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        for option in (a for a in argv if a.startswith("--")):
            assert option in shown.stdout, f"`coalmine {' '.join(sub)}` has no {option}"


def _run_gateway_yaml(body: str, tmp_path: Path) -> None:
    assert body == (ROOT / "examples/gateway.yaml").read_text()
    assert load_config(ROOT / "examples/gateway.yaml").model("iris").versions


def _run_rollout_yaml(body: str, tmp_path: Path) -> None:
    assert body == (ROOT / "examples/rollout.yaml").read_text()
    assert parse_spec(yaml.safe_load(body)).canary.steps


X, Y = load_iris(return_X_y=True)


def _abort_once_running(cm: LocalCoalmine, model: str) -> threading.Thread:
    """Abort the model's rollout as soon as it is active, so `wait()` returns promptly."""

    def run() -> None:
        client = cm.client()
        for _ in range(300):
            active = client.active_rollout(model)
            if active is not None:
                client.abort(active["id"], "README test: enough")
                return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _run_sdk_block(body: str, tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    with (
        serve_estimator(model, "iris", "v1") as v1,
        serve_estimator(model, "iris", "v4") as v4,
        LocalCoalmine({"iris": {"v1": v1}}, workdir=tmp_path) as cm,
    ):
        code = body.replace("http://127.0.0.1:8900", cm.api_url).replace(
            "http://127.0.0.1:9004", v4.url
        )
        aborter = _abort_once_running(cm, "iris")
        namespace: dict[str, object] = {"token": cm.token}
        exec(compile(code, "README.md (SDK)", "exec"), namespace)
        aborter.join(30)
        final = namespace["final"]
        assert isinstance(final, dict) and final["phase"] == "aborted", final


def _run_analysis_block(body: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    namespace: dict[str, object] = {}
    for arm, accuracy in (("c", 0.90), ("p", 0.90)):
        n = 3000
        labels = rng.integers(0, 3, n)
        right = rng.random(n) < accuracy
        namespace[f"labels_{arm}"] = labels.tolist()
        namespace[f"preds_{arm}"] = np.where(right, labels, (labels + 1) % 3).tolist()
        namespace[f"lat_{arm}"] = rng.lognormal(np.log(20), 0.3, n).tolist()
        namespace[f"errs_{arm}"] = (rng.random(n) < 0.01).tolist()
        namespace[f"regions_{arm}"] = rng.choice(["north", "south"], n).tolist()
    exec(compile(body, "README.md (Analysis)", "exec"), namespace)


def _run_testing_block(body: str, tmp_path: Path) -> None:
    namespace: dict[str, object] = {
        "current": LogisticRegression(max_iter=500).fit(X, Y),
        "new": LogisticRegression(C=0.5, max_iter=500).fit(X, Y),
        "X": X,
        "y": Y,
    }
    exec(compile(body, "README.md (testing)", "exec"), namespace)
    test = namespace["test_retrained_model_is_promoted"]
    assert callable(test)
    test(tmp_path)


def _check_layout(body: str, tmp_path: Path) -> None:
    for line in body.splitlines():
        for path in re.findall(r"(coalmine/[\w/.]*|\w+\.py)(?=[ ,])", line):
            target = ROOT / path if path.startswith("coalmine/") else ROOT / "coalmine" / path
            assert target.exists(), f"README layout names {path}, which does not exist"


def _diagram(body: str, tmp_path: Path) -> None:
    assert "gateway" in body


def _run_prometheus_source_yaml(body: str, tmp_path: Path) -> None:
    from coalmine.analysis.promql import install_sources, installed_sources
    from coalmine.config import parse_config

    data = {**yaml.safe_load(body), "models": [{"name": "m", "versions": [{"name": "v1",
            "url": "http://127.0.0.1:9001"}]}]}  # fmt: skip
    config = parse_config(data)
    before = installed_sources()
    try:  # what `coalmine serve` does at start: every query checked
        install_sources({n: s.queries for n, s in config.metric_sources.items()})
    finally:
        install_sources(before)


def _run_promql_criteria_yaml(body: str, tmp_path: Path) -> None:
    from coalmine.analysis.promql import install_sources, installed_sources
    from coalmine.rollout.judge import build_criteria, build_guard_rails

    before = installed_sources()
    install_sources({"prom": {}})
    try:
        spec = parse_spec(yaml.safe_load(body))
        build_criteria(spec, "canary")
        assert len(build_guard_rails(spec, "canary")) == 3
    finally:
        install_sources(before)


Runner = Callable[[str, Path], None]
# (language, a string only that block contains, runner, slow)
RUNNERS: list[tuple[str, str, Runner, bool]] = [
    ("text", "client ──►", _diagram, False),
    ("bash", "make demo", _run_make_block, False),
    ("bash", "coalmine validate", _run_cli_block, False),
    ("yaml", "A complete Coalmine configuration", _run_gateway_yaml, False),
    ("yaml", "A rollout spec", _run_rollout_yaml, False),
    ("python", "coalmine.Client(", _run_sdk_block, False),
    ("python", "from coalmine.analysis import Analysis", _run_analysis_block, False),
    ("python", "def test_retrained_model_is_promoted", _run_testing_block, True),
    ("text", "coalmine/config.py", _check_layout, False),
    ("yaml", "type: prometheus", _run_prometheus_source_yaml, False),
    ("yaml", "source: prom", _run_promql_criteria_yaml, False),
]


def _runner_of(language: str, body: str) -> list[int]:
    return [i for i, (lang, mark, _, _) in enumerate(RUNNERS) if lang == language and mark in body]


def test_every_block_has_a_runner() -> None:
    claimed = [_runner_of(language, body) for language, body in _blocks()]
    assert all(len(c) == 1 for c in claimed), claimed
    assert sorted(i for c in claimed for i in c) == list(range(len(RUNNERS)))


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(i, id=r[2].__name__.strip("_"), marks=[pytest.mark.slow] if r[3] else [])
        for i, r in enumerate(RUNNERS)
    ],
)
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    language, mark, runner, _ = RUNNERS[index]
    bodies = [b for lang, b in _blocks() if lang == language and mark in b]
    assert len(bodies) == 1
    runner(bodies[0], tmp_path)
