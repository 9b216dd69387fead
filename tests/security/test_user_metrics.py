"""User metrics come only from the operator's allow-list, never from a spec or an API call.

A probe sent `{"metric": "user:builtins:exec"}` in a rollout spec and the controller imported
and ran it. These tests send the same through the real control API (uvicorn on loopback)
and through a real `coalmine serve`, and check that nothing is imported: the module they
name writes a file when imported, and the file must not appear.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from coalmine.analysis import Analysis, Criterion, user_metrics
from coalmine.analysis.user_metrics import (
    UserMetricError,
    available,
    install_user_metrics,
    register_user_metric,
)
from coalmine.config import ConfigError, parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api

TOKEN = "user-metrics-token"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path (and PYTHONPATH, for servers started as processes) with
    `sidefx_probe` (writes `imported` beside it when imported) and `allowed_metrics`."""
    (tmp_path / "sidefx_probe.py").write_text(
        textwrap.dedent(f"""
            from pathlib import Path
            Path({str(tmp_path / "imported")!r}).write_text("imported")
            def boom(prediction, label):
                Path({str(tmp_path / "called")!r}).write_text("called")
                return 1.0
        """)
    )
    (tmp_path / "allowed_metrics.py").write_text(
        textwrap.dedent("""
            def top_class_correct(prediction, label):
                # the logged prediction: [{"label": k, "scores": ...}], {"predictions": [k]}, k
                while isinstance(prediction, (dict, list)):
                    if isinstance(prediction, dict):
                        prediction = prediction.get("label", prediction.get("predictions"))
                    else:
                        prediction = prediction[0]
                return 1.0 if int(prediction) == int(label) else 0.0
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), inherited])))
    monkeypatch.setattr(user_metrics, "_allowed", {})  # this test's allow-list only
    try:
        yield tmp_path
    finally:
        sys.modules.pop("sidefx_probe", None)
        sys.modules.pop("allowed_metrics", None)


def _nothing_ran(where: Path) -> None:
    assert "sidefx_probe" not in sys.modules
    assert not (where / "imported").exists()
    assert not (where / "called").exists()


# -- the criterion model, as a library user meets it --------------------------------------


@pytest.mark.parametrize(
    "metric", ["user:builtins:exec", "user:sidefx_probe:boom", "user:os.path:join"]
)
def test_a_module_path_in_a_criterion_is_refused_and_nothing_is_imported(
    modules: Path, metric: str
) -> None:
    with pytest.raises(ValidationError, match="not allow-listed") as info:
        Criterion(metric=metric, margin=0.1)
    assert "user_metrics" in str(info.value)  # says where user metrics come from
    _nothing_ran(modules)


def test_an_unknown_name_is_refused_listing_the_allowed_ones(modules: Path) -> None:
    install_user_metrics({"correct": "allowed_metrics:top_class_correct"})
    with pytest.raises(ValidationError, match=r"available: user:correct"):
        Criterion(metric="user:corect", margin=0.1)
    assert Criterion(metric="user:correct", margin=0.1).spec.family == "user"


def test_a_library_user_registers_their_own_function(modules: Path) -> None:
    def hypot(prediction: Any, label: Any) -> float:
        return float((prediction**2 + label**2) ** 0.5)

    register_user_metric("hypot", hypot)
    register_user_metric("hypot", hypot)  # the same function again: fine
    with pytest.raises(UserMetricError, match="already registered"):
        register_user_metric("hypot", abs)  # type: ignore[arg-type]
    c = Criterion(metric="user:hypot", margin=0.1, direction="lower")
    a = Analysis([c], max_slices=0, task="regression")
    a.add_batch("candidate", predictions=[3.0] * 50, labels=[4.0] * 50)
    a.add_batch("baseline", predictions=[3.0] * 50, labels=[4.0] * 50)
    r = a.judge().results[0]
    assert r.candidate_value == pytest.approx(5.0) and r.n_candidate == 50


def test_install_imports_at_start_and_names_what_cannot_load(modules: Path) -> None:
    with pytest.raises(UserMetricError, match=r"bad: cannot import module 'no_such_mod'"):
        install_user_metrics({"ok": "allowed_metrics:top_class_correct", "bad": "no_such_mod:f"})
    assert available() == {}  # all or nothing
    with pytest.raises(UserMetricError, match="has no function"):
        install_user_metrics({"ok": "allowed_metrics:nope"})
    install_user_metrics({"ok": "allowed_metrics:top_class_correct"})
    assert available() == {"ok": "allowed_metrics:top_class_correct"}


def test_the_config_declares_user_metrics_by_name(modules: Path) -> None:
    base: dict[str, Any] = {
        "models": [
            {"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
             "routing": {"stable": "v1"}}
        ]
    }  # fmt: skip
    config = parse_config({**base, "user_metrics": {"correct": "allowed_metrics:f"}})
    assert config.user_metrics == {"correct": "allowed_metrics:f"}
    for bad in ({"x": "not a target"}, {"bad name!": "m:f"}, {"x": "m:f:g"}):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "user_metrics": bad})
        assert all(p.startswith("user_metrics.") for p, _ in info.value.errors), info.value


def test_coalmine_serve_refuses_to_start_with_a_metric_it_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "api: {token: t, port: 0}\ngateway: {port: 0}\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'c.db'}'}}\n"
        "models: [{name: m, versions: [{name: v1, url: 'http://127.0.0.1:9'}],"
        " routing: {stable: v1}}]\n"
        "user_metrics: {typo: 'no_such_module_here:f'}\n"
    )
    from typer.testing import CliRunner

    from coalmine.cli import app

    # the real command in-process (a subprocess costs seconds of imports): it stops before
    # opening a port or the store
    done = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert done.exit_code == 2, done.output
    assert "user_metrics" in done.output and "typo: cannot import module" in done.output
    assert not (tmp_path / "c.db").exists()


# -- the real control API --------------------------------------------------------------------


@pytest.fixture
def api(modules: Path, tmp_path: Path) -> Iterator[str]:
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'c.db'}"},
            "models": [
                {"name": "iris", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                 "routing": {"stable": "v1"}}
            ],
            "user_metrics": {"correct": "allowed_metrics:top_class_correct"},
        }
    )  # fmt: skip
    install_user_metrics(config.user_metrics)  # what `coalmine serve` does at start
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    try:
        with control_api(engine, TOKEN) as url:
            yield url
    finally:
        engine.dispose()


def _start(api: str, metric: str) -> httpx.Response:
    spec = {
        "shadow": {"criteria": [{"metric": metric, "margin": 0.1}]},
        "canary": {"steps": [100], "criteria": [{"metric": "error_rate"}]},
    }
    body = {"model": "iris", "candidate": "v2", "url": "http://127.0.0.1:9", "spec": spec}
    return httpx.post(
        f"{api}/api/v1/rollouts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )


@pytest.mark.parametrize("metric", ["user:builtins:exec", "user:sidefx_probe:boom"])
def test_the_api_refuses_a_module_path_with_422_and_runs_nothing(
    api: str, modules: Path, metric: str
) -> None:
    answer = _start(api, metric)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["errors"]
    assert error["field"] == "spec.shadow.criteria.0.metric"
    assert "not allow-listed" in error["reason"] and "available: user:correct" in error["reason"]
    _nothing_ran(modules)
    listed = httpx.get(f"{api}/api/v1/rollouts", headers={"Authorization": f"Bearer {TOKEN}"})
    assert listed.json() == []  # no rollout was created


def test_the_api_lists_the_allow_list_and_accepts_its_names(api: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{api}/api/v1/user-metrics").status_code == 401
    listed = httpx.get(f"{api}/api/v1/user-metrics", headers=auth)
    assert listed.json() == [
        {"metric": "user:correct", "function": "allowed_metrics:top_class_correct"}
    ]
    assert _start(api, "user:correct").status_code == 201


# -- a real `coalmine serve`: refused over HTTP, and an allow-listed metric end to end ------


def test_coalmine_serve_judges_an_allow_listed_metric_and_refuses_code(modules: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from coalmine.client import CoalmineAPIError
    from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

    X, y = load_iris(return_X_y=True)
    v1_model = LogisticRegression(max_iter=500).fit(X, y)
    v2_model = LogisticRegression(C=0.5, max_iter=500).fit(X, y)
    user = {"user_metrics": {"correct": "allowed_metrics:top_class_correct"}}
    with (
        serve_estimator(v1_model, "iris", "v1") as v1,
        serve_estimator(v2_model, "iris", "v2") as v2,
        LocalCoalmine({"iris": {"v1": v1}}, config=user, workdir=modules / "cm") as cm,
    ):
        client = cm.client()
        with pytest.raises(CoalmineAPIError) as refused:
            client.start_rollout(
                "iris", "v2", v2.url,
                fast_spec(shadow={"criteria": [{"metric": "user:sidefx_probe:boom",
                                                "margin": 0.1}]}),
            )  # fmt: skip
        assert refused.value.status == 422
        assert "available: user:correct" in str(refused.value.errors)

        spec = fast_spec(
            shadow={"criteria": [{"metric": "user:correct", "margin": 0.1}],
                    "min_duration": 600, "max_duration": 900},
        )  # fmt: skip
        with Traffic(cm.gateway_url, "iris", X, y, rate=60, label_delay=0.1):
            rollout = client.start_rollout("iris", "v2", v2.url, spec)
            deadline = time.monotonic() + 60
            result: dict[str, Any] = {}
            while time.monotonic() < deadline:
                judgement = client.judgement(rollout.id)["judgement"] or {}
                overall = [r for r in judgement.get("results", []) if r["slice"] is None]
                result = overall[0] if overall else {}
                if result.get("n_candidate", 0) >= 30:
                    break
                time.sleep(0.3)
        client.abort(rollout.id)
    assert result.get("metric") == "user:correct", (result, cm.logs()[-2000:])
    # the function ran in the server: the candidate's share of correct answers, ~0.97
    assert result["n_candidate"] >= 30 and 0.8 <= result["candidate_value"] <= 1.0
    _nothing_ran(modules)


# -- coalmine analyze: the user's own process, an allow-list given on the command line -----


def test_coalmine_analyze_takes_user_metrics_from_its_command_line(
    modules: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from coalmine.cli import app
    from tests.analysis.test_cli_analysis import _export

    export = tmp_path / "log.csv"
    _export(export, acc_candidate=0.9, n=400)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("- metric: user:correct\n  margin: 0.2\n  per_slice: false\n")
    args = ["analyze", str(export), "--model", "m", "--candidate", "v2", "--baseline", "v1",
            "--criteria", str(criteria), "--json"]  # fmt: skip
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "not allow-listed" in refused.output
    allowed = CliRunner().invoke(
        app, [*args, "--user-metric", "correct=allowed_metrics:top_class_correct"]
    )
    assert allowed.exit_code == 0, allowed.output
    (result,) = json.loads(allowed.output)["results"]
    assert result["metric"] == "user:correct" and result["n_candidate"] > 50
    bad = CliRunner().invoke(app, [*args, "--user-metric", "correct"])
    assert bad.exit_code == 2 and "NAME=module.path:function" in bad.output
    _nothing_ran(modules)
