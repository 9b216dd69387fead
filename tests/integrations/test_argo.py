"""Argo Rollouts' web metric replayed against a real control API judging a real log.

Each test sends what Argo's web provider sends for examples/argo/analysis-template.yaml
(metricproviders/webmetric/webmetric.go `Run`: the template's method, URL and headers
with `{{args.*}}` substituted, `jsonBody` as a JSON POST body with Content-Type set,
`timeoutSeconds` as the client timeout), then reads the answer as Argo does
(argo_semantics.py: non-2xx is an Error, `jsonPath` picks the value, the success and
failure conditions decide the measurement, the metric's limits decide the run).
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from coalmine.client import Client
from tests.integrations.argo_semantics import MetricRun, json_path, measure
from tests.integrations.conftest import JUDGE_TOKEN, TOKEN, Stack, seed

# generous timeouts (the tests share two cores with whatever else runs); no keep-alive,
# so no connection outlives the module's server
http = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "argo"


def _load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def _substitute(value: Any, args: dict[str, str]) -> Any:
    """Argo's `{{args.name}}` substitution over a template's strings."""
    if isinstance(value, str):
        for k, v in args.items():
            value = value.replace("{{args." + k + "}}", v)
        assert "{{" not in value, f"an argument is missing: {value}"
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, args) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args) for v in value]
    return value


def _metric(base_url: str) -> dict[str, Any]:
    """The example's metric, pointed at the test's API instead of the cluster Service."""
    metric = copy.deepcopy(_load("analysis-template.yaml")["spec"]["metrics"][0])
    web = metric["provider"]["web"]
    web["url"] = web["url"].replace("http://coalmine.coalmine.svc:8900", base_url)
    return metric


def replay(metric: dict[str, Any], args: dict[str, str]) -> tuple[int, Any]:
    """One request as Argo's web provider sends it; (status, parsed JSON body)."""
    web = _substitute(metric["provider"]["web"], args)
    headers = {h["key"]: h["value"] for h in web.get("headers", [])}
    kwargs: dict[str, Any] = {"headers": headers, "timeout": web.get("timeoutSeconds", 10)}
    if "jsonBody" in web:
        kwargs["json"] = web["jsonBody"]  # httpx sets Content-Type: application/json
    r = http.request(web.get("method", "GET"), web["url"], **kwargs)
    return r.status_code, r.json()


ARGS = {"model": "iris", "baseline": "v1", "weight": "5", "judge-token": JUDGE_TOKEN}


@pytest.fixture(scope="module")
def log(stack: Stack) -> Stack:
    start = time.time() - 600  # ten minutes of traffic: past the spec's min_duration (2m)
    seed(stack.engine, "iris", "v1", 3000, error_rate=0.01, seed=1, start=start)
    seed(stack.engine, "iris", "v2", 3000, error_rate=0.01, seed=2, start=start)
    seed(stack.engine, "iris", "bad", 1500, error_rate=0.01, accuracy=0.6, seed=3, start=start)
    seed(stack.engine, "iris", "few", 5, seed=4, start=start)
    seed(stack.engine, "iris", "late", 5, seed=6, start=start)
    return stack


def test_examples_parse_and_the_rollout_gives_every_argument() -> None:
    template = _load("analysis-template.yaml")
    rollout = _load("rollout.yaml")
    assert template["kind"] == "AnalysisTemplate" and rollout["kind"] == "Rollout"
    metric = template["spec"]["metrics"][0]
    spec_steps = metric["provider"]["web"]["jsonBody"]["spec"]["canary"]["steps"]
    declared = {a["name"] for a in template["spec"]["args"]}
    from_template = {a["name"] for a in template["spec"]["args"] if "valueFrom" in a}
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    analyses = [s["analysis"] for s in steps if "analysis" in s]
    assert len(analyses) == len(weights) == 3
    for weight, analysis in zip(weights, analyses, strict=True):
        assert analysis["templates"] == [{"templateName": template["metadata"]["name"]}]
        given = {a["name"]: a for a in analysis["args"]}
        assert set(given) | from_template == declared
        # the step's weight is the one the analysis names, and one of the spec's steps
        assert given["weight"]["value"] == str(weight)
        assert weight in spec_steps
        assert given["candidate"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
        assert given["baseline"]["valueFrom"] == {"podTemplateHashValue": "Stable"}


def test_a_good_candidate_succeeds_at_the_first_look(log: Stack) -> None:
    metric = _metric(log.url)
    status, body = replay(metric, {**ARGS, "candidate": "v2"})
    assert status == 200, body
    assert body["verdict"] == "PASS", body["reason"]
    assert measure(metric, status, body) == "Successful"
    assert MetricRun(metric).add("Successful") == "Successful"
    # the answer carries what a person reads in the AnalysisRun's measurement
    assert body["n_candidate"] == 3000 and body["n_baseline"] > 2500
    acc = body["criteria"]["accuracy"]
    assert acc["lower"] < acc["estimate"] < acc["upper"] and acc["threshold"] == -0.01
    # not_fail in a canary: the step passes once a regression larger than the 5% step's
    # floor is ruled out, before the 1-point margin itself is decided
    assert acc["must"] == "not_fail" and acc["lower"] > -acc["rule_out"]
    assert any(s.startswith("accuracy: no regression larger than") for s in body["ruled_out"])
    assert body["step"]["weight"] == 5 and body["step"]["samples"] == 3000
    assert json_path("{$.criteria.accuracy.verdict}", body) == acc["verdict"]


def test_a_bad_candidate_fails_and_aborts(log: Stack) -> None:
    metric = _metric(log.url)
    status, body = replay(metric, {**ARGS, "candidate": "bad"})
    assert status == 200
    assert body["verdict"] == "FAIL"
    assert "accuracy" in body["reason"] and body["criteria"]["accuracy"]["verdict"] == "FAIL"
    assert measure(metric, status, body) == "Failed"
    assert MetricRun(metric).add("Failed") == "Failed"  # failureLimit 0: the Rollout aborts


def test_too_little_data_keeps_measuring_then_decides_on_more(log: Stack) -> None:
    metric = _metric(log.url)
    run = MetricRun(metric)
    for _ in range(3):
        status, body = replay(metric, {**ARGS, "candidate": "late"})
        assert body["verdict"] == "INCONCLUSIVE", body
        assert "5/200 samples" in body["reason"]
        assert run.add(measure(metric, status, body)) == "Running"  # waiting, not failing
    # the candidate's traffic arrives: the same question now decides (read incrementally)
    seed(log.engine, "iris", "late", 3000, error_rate=0.01, seed=5, start=time.time() - 590)
    status, body = replay(metric, {**ARGS, "candidate": "late"})
    assert body["verdict"] == "PASS", body["reason"]
    assert run.add(measure(metric, status, body)) == "Successful"


@pytest.mark.slow  # 40 looks; the Running looks are also covered by the test above
def test_a_step_never_decided_ends_inconclusive_and_pauses_the_rollout(log: Stack) -> None:
    metric = _metric(log.url)
    run = MetricRun(metric)
    phases = []
    for _ in range(int(metric["count"])):
        status, body = replay(metric, {**ARGS, "candidate": "few"})
        phases.append(run.add(measure(metric, status, body)))
    assert set(phases[:-1]) == {"Running"}
    assert phases[-1] == "Inconclusive"  # Argo pauses the Rollout for a person


def test_requests_that_cannot_be_judged_are_errors_not_verdicts(log: Stack) -> None:
    metric = _metric(log.url)
    status, body = replay(metric, {**ARGS, "candidate": "v2", "model": "nope"})
    assert status == 404 and body == {"error": "unknown model 'nope'"}
    assert measure(metric, status, body) == "Error"
    status, body = replay(metric, {**ARGS, "candidate": "v2", "weight": "7"})
    assert status == 422
    steps = "[5.0, 25.0, 50.0, 100.0]"
    assert body["errors"] == [
        {"field": "weight", "reason": f"7 is not one of the spec's canary steps {steps}"}
    ]
    status, _ = replay(metric, {**ARGS, "candidate": "v2", "judge-token": "wrong"})
    assert status == 403
    run = MetricRun(metric)
    phases = [run.add("Error") for _ in range(5)]
    assert phases[-1] == "Error"  # past consecutiveErrorLimit (4): the run errors


def test_the_judge_token_opens_the_judge_endpoints_only(log: Stack) -> None:
    judge = {"Authorization": f"Bearer {JUDGE_TOKEN}"}
    control = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{log.url}/api/v1/judge/models/iris"
    params = {"candidate": "v2"}
    assert http.get(url, params=params, headers=judge).status_code == 200
    assert http.get(url, params=params, headers=control).status_code == 200
    assert http.get(url, params=params).status_code == 401
    assert http.get(url, params=params, headers={"Authorization": "Bearer x"}).status_code == 403
    # read-only: the judge token opens nothing else
    assert http.get(f"{log.url}/api/v1/models", headers=judge).status_code == 403
    started = http.post(
        f"{log.url}/api/v1/rollouts", headers=judge,
        json={"model": "iris", "candidate": "v2", "url": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert started.status_code == 403


def test_get_judges_by_the_default_spec(log: Stack) -> None:
    r = http.get(
        f"{log.url}/api/v1/judge/models/iris",
        params={"candidate": "bad", "weight": 25},
        headers={"Authorization": f"Bearer {JUDGE_TOKEN}"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["verdict"] == "FAIL" and body["baseline"] == "v1"  # the store's stable
    assert body["step"]["weight"] == 25


def test_each_step_counts_its_own_samples(log: Stack) -> None:
    """Argo's next step asks with its weight: its samples and time start again, so
    `min_samples` is met by the step's own calls, as in Coalmine's own canary steps."""
    spec = {"canary": {"steps": [5, 25, 100], "min_duration": 0, "min_samples": 200,
                       "criteria": [{"metric": "error_rate", "margin": 0.05}]}}  # fmt: skip
    url = f"{log.url}/api/v1/judge/models/iris"
    auth = {"Authorization": f"Bearer {JUDGE_TOKEN}"}

    def ask(weight: int) -> dict[str, Any]:
        body = {"candidate": "ramp", "baseline": "v1", "weight": weight, "spec": spec}
        r = http.post(url, json=body, headers=auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    now = time.time()
    seed(log.engine, "iris", "v1", 1000, error_rate=0.01, seed=20, start=now - 300)
    seed(log.engine, "iris", "ramp", 1000, error_rate=0.01, seed=21, start=now - 300)
    first = ask(5)
    assert first["verdict"] == "PASS" and first["step"]["samples"] == 1000, first["reason"]
    second = ask(25)  # the weight changed: nothing of this step yet
    assert second["verdict"] == "INCONCLUSIVE" and second["step"]["samples"] == 0
    assert "0/200 samples" in second["reason"]
    # both versions' calls at 25%, as the router splits them from now on
    seed(log.engine, "iris", "v1", 1500, error_rate=0.01, seed=22, start=now + 1, every=0.001)
    seed(log.engine, "iris", "ramp", 500, error_rate=0.01, seed=23, start=now + 1, every=0.001)
    third = ask(25)
    assert third["step"]["samples"] == 500 and third["step"]["weight"] == 25
    assert third["verdict"] == "PASS", third["reason"]


def test_the_documented_workflow_over_the_batch_ingest(log: Stack) -> None:
    """What docs/traffic-layer.md tells an Argo user to do, all over HTTP: register each
    revision (named by its pod-template hash), report every call through the batch ingest
    with role "stable" (a pod does not know whether it is the canary), ask the judge."""
    client = Client(log.url, TOKEN, timeout_s=60)
    for version in ("5d8f6c7b9", "7c4b5f8d6", "6b7c8d9f5"):
        client.add_version("iris", version, f"http://iris-{version}.ml:8080")
    rng = random.Random(31)
    t0 = time.time() - 300

    def calls(version: str, error_rate: float) -> list[dict[str, Any]]:
        out = []
        for i in range(600):
            failed = rng.random() < error_rate
            out.append({
                "request_id": f"{version}-{i}", "model": "iris", "version": version,
                "role": "stable", "ts": t0 + i * 0.1, "latency_ms": 20 + rng.random(),
                "status": 500 if failed else 200, "prediction": None if failed else 1,
            })  # fmt: skip
        return out

    assert client.ingest(calls("5d8f6c7b9", 0.01))["written"] == 600  # stable revision
    client.ingest(calls("7c4b5f8d6", 0.01))  # a good new revision
    client.ingest(calls("6b7c8d9f5", 0.30))  # a crashing one
    spec = {"canary": {"steps": [5, 100], "min_duration": 0, "min_samples": 200,
                       "criteria": [{"metric": "error_rate", "margin": 0.02}]}}  # fmt: skip
    metric = _metric(log.url)
    metric["provider"]["web"]["jsonBody"]["spec"] = spec
    args = {**ARGS, "baseline": "5d8f6c7b9"}
    status, body = replay(metric, {**args, "candidate": "7c4b5f8d6"})
    assert measure(metric, status, body) == "Successful", body["reason"]
    assert body["n_candidate"] == 600 and body["n_baseline"] == 600
    status, body = replay(metric, {**args, "candidate": "6b7c8d9f5"})
    assert measure(metric, status, body) == "Failed"
    assert "error_rate" in body["reason"]
