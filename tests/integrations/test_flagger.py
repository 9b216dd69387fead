"""Flagger's webhooks and metric template replayed against a real control API.

What Flagger sends, from fluxcd/flagger (commit 15bd6ad5, 2026-07): pkg/controller/
webhook.go `CallWebhook` POSTs `{"name", "namespace", "phase", "checksum", "metadata"}`
(v1beta1 `CanaryWebhookPayload`; metadata is the webhook's own from the Canary) with only
`Content-Type: application/json`, and any status above 202 is an error. What Flagger
does with the answers, from pkg/controller/scheduler.go `advanceCanary` and
scheduler_hooks.go, for the Canary of examples/flagger/canary.yaml (one step of 10%):
rollback hooks first (2xx: roll back), the failed-check threshold, pre-rollout hooks while
the weight is 0 (an error: a failed check), else the rollout hooks and the metric checks
(an error or a value out of `thresholdRange`: a failed check), then the weight raised to
`maxWeight`, then the confirm-promotion hooks (an error: wait in WaitingPromotion).
`FlaggerSim` replays that order against the live API; the metric check runs the
example's MetricTemplate on a real Prometheus scraping the judge metrics.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integrations.conftest import JUDGE_TOKEN, Stack, seed
from tests.integrations.prometheus import (
    NoValues,
    flagger_query,
    prometheus_scraping,
    wait_for_a_good_scrape,
    wait_for_value,
)

# generous timeouts (the tests share two cores with whatever else runs); no keep-alive,
# so no connection outlives the module's server
http = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flagger"
CLUSTER_URL = "http://coalmine.coalmine.svc:8900"


def _canary() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "canary.yaml").read_text()))


def _template() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "metric-template.yaml").read_text()))


def post_hook(url: str, hook: dict[str, Any], name: str, phase: str, checksum: str) -> int:
    """One webhook call as Flagger's CallWebhook makes it; the status code."""
    payload = {"name": name, "namespace": "models", "phase": phase, "checksum": checksum,
               "metadata": hook.get("metadata") or {}}  # fmt: skip
    r = http.post(
        hook["url"].replace(CLUSTER_URL, url),
        content=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=float(hook.get("timeout", "10s").rstrip("s")),
    )
    return r.status_code


@dataclass
class FlaggerSim:
    """The scheduler's order for a one-step canary (module docstring)."""

    url: str
    canary: dict[str, Any]
    checksum: str
    prometheus: str | None = None
    weight: int = 0
    failed_checks: int = 0
    phase: str = "Progressing"
    events: list[str] = field(default_factory=list)

    def hooks(self, kind: str) -> list[dict[str, Any]]:
        return [h for h in self.canary["spec"]["analysis"]["webhooks"] if h["type"] == kind]

    def ok(self, hook: dict[str, Any]) -> bool:
        name = self.canary["metadata"]["name"]
        return post_hook(self.url, hook, name, self.phase, self.checksum) <= 202

    def metric_ok(self) -> bool:
        if self.prometheus is None:
            return True
        metric = self.canary["spec"]["analysis"]["metrics"][0]
        query, variables = _template()["spec"]["query"], metric["templateVariables"]
        try:
            value = flagger_query(self.prometheus, query, variables)
        except NoValues:
            # a scrape that timed out on a loaded machine leaves the series stale for a
            # moment; Flagger, a minute after its last webhook, reads a settled one
            wait_for_a_good_scrape(self.prometheus)
            try:
                value = flagger_query(self.prometheus, query, variables)
            except NoValues:
                self.events.append("metric check: no values")
                return False  # Flagger: "no values found", a failed check
        return value >= metric["thresholdRange"]["min"]

    def iterate(self) -> str:
        analysis = self.canary["spec"]["analysis"]
        if self.phase in ("Progressing", "WaitingPromotion"):
            if any(self.ok(h) for h in self.hooks("rollback")):
                self.phase = "Failed"
                return "rolled back by the rollback hook"
            if self.failed_checks >= analysis["threshold"]:
                self.phase = "Failed"
                return "rolled back: failed checks threshold"
        if self.weight == 0:
            if not all(self.ok(h) for h in self.hooks("pre-rollout")):
                self.failed_checks += 1
                return "pre-rollout check failed"
            self.weight = analysis["maxWeight"]
            return f"weight {self.weight}"
        if not all(self.ok(h) for h in self.hooks("rollout")):
            self.failed_checks += 1
            return "check failed: a rollout webhook closed the gate"
        if not self.metric_ok():
            self.failed_checks += 1
            return "check failed: the metric"
        if not all(self.ok(h) for h in self.hooks("confirm-promotion")):
            self.phase = "WaitingPromotion"
            return "waiting for promotion"
        self.phase = "Promoting"
        return "promoting"


def _for_test(canary: dict[str, Any], **metadata: str) -> dict[str, Any]:
    """The example Canary renamed `podinfo` (the test's model: versions `podinfo` and
    `podinfo-primary` by default), its spec's 5 minutes of minimum duration cut to 0 (a
    test does not wait five minutes), `metadata` added to every Coalmine webhook."""
    canary["metadata"]["name"] = "podinfo"
    canary["spec"]["analysis"]["metrics"][0]["templateVariables"] = {
        "model": "podinfo",
        "candidate": metadata.get("candidate", "podinfo"),
        "baseline": "podinfo-primary",
    }
    for hook in canary["spec"]["analysis"]["webhooks"]:
        meta = hook["metadata"]
        meta["token"] = JUDGE_TOKEN
        meta["spec"] = meta["spec"].replace("min_duration: 5m", "min_duration: 0s")
        meta.update(metadata)
    return canary


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[str]:
    with prometheus_scraping(f"{stack.url}/api/v1/judge/metrics", JUDGE_TOKEN) as url:
        yield url


def _traffic(stack: Stack, version: str, **kw: Any) -> None:
    """The canary's and production's calls, logged after the pre-rollout call."""
    start = time.time()
    # production's own calls of the same moment (request ids differ between tests)
    seed(stack.engine, "podinfo", "podinfo-primary", 2000, error_rate=0.01,
         seed=zlib.crc32(version.encode()), start=start, every=0.001)  # fmt: skip
    seed(stack.engine, "podinfo", version, 2000, start=start, every=0.001, **kw)


def test_examples_parse_and_name_each_other() -> None:
    canary, template = _canary(), _template()
    metric = canary["spec"]["analysis"]["metrics"][0]
    assert metric["templateRef"]["name"] == template["metadata"]["name"]
    query = template["spec"]["query"]
    for name in ("model", "candidate", "baseline"):
        assert "{{ variables." + name + " }}" in query and name in metric["templateVariables"]
    kinds = {h["type"] for h in canary["spec"]["analysis"]["webhooks"]}
    assert kinds == {"pre-rollout", "rollout", "confirm-promotion", "rollback"}
    analysis = canary["spec"]["analysis"]
    for hook in analysis["webhooks"]:
        assert hook["url"].endswith("/api/v1/judge/flagger/" + hook["type"])
        steps = yaml.safe_load(hook["metadata"]["spec"])["canary"]["steps"]
        # the judged weight is the canary's one step, and one of the spec's steps
        assert float(hook["metadata"]["weight"]) == analysis["maxWeight"] == steps[0]


def test_a_good_candidate_is_promoted(stack: Stack, prometheus: str) -> None:
    sim = FlaggerSim(stack.url, _for_test(_canary(), model="podinfo"), "good-1", prometheus)
    assert sim.iterate() == "weight 10"  # no data yet: pre-rollout lets it start
    variables = sim.canary["spec"]["analysis"]["metrics"][0]["templateVariables"]
    # Flagger's interval (1m in the example) outlasts a scrape: the pre-rollout call's
    # judgement (INCONCLUSIVE, 0) is in Prometheus before the first metric check
    wait_for_value(prometheus, _template()["spec"]["query"], variables, 0.0)
    _traffic(stack, "podinfo", error_rate=0.01)
    assert sim.iterate() == "promoting"
    assert sim.failed_checks == 0
    # the PASS reaches Prometheus too (a dashboard, or a template asking for min: 1)
    wait_for_value(prometheus, _template()["spec"]["query"], variables, 1.0)


def test_a_bad_candidate_is_rolled_back_by_the_rollback_hook(stack: Stack) -> None:
    sim = FlaggerSim(stack.url, _for_test(_canary(), model="podinfo", candidate="podbad"),
                     "bad-1")  # fmt: skip
    assert sim.iterate() == "weight 10"
    _traffic(stack, "podbad", error_rate=0.01, accuracy=0.6, seed=12)
    assert sim.iterate() == "rolled back by the rollback hook"
    # what the rollback hook answered, for a person reading Flagger's events
    rollback = sim.hooks("rollback")[0]
    r = http.post(rollback["url"].replace(CLUSTER_URL, stack.url), json={
        "name": "podinfo", "namespace": "models", "phase": "Progressing", "checksum": "bad-1",
        "metadata": rollback["metadata"]})  # fmt: skip
    body = r.json()
    assert r.status_code == 200 and body["gate"] == "open" and body["verdict"] == "FAIL"
    assert "accuracy" in body["reason"] and body["candidate"] == "podbad"


def test_too_little_data_halts_at_the_promotion_gate(stack: Stack) -> None:
    sim = FlaggerSim(stack.url, _for_test(_canary(), model="podinfo", candidate="podfew"),
                     "few-1")  # fmt: skip
    assert sim.iterate() == "weight 10"
    seed(stack.engine, "podinfo", "podfew", 5, seed=13, start=time.time(), every=0.001)
    for _ in range(4):
        assert sim.iterate() == "waiting for promotion"
    assert sim.failed_checks == 0 and sim.phase == "WaitingPromotion"  # halted, not failed


def test_rows_before_the_canary_was_first_seen_are_not_judged(stack: Stack) -> None:
    """A Deployment name reused by every release: the previous release's calls of the same
    version name are older than this canary's checksum, so they are not this release's."""
    seed(stack.engine, "podinfo", "podold", 2000, accuracy=0.5, seed=14,
         start=time.time() - 600)  # fmt: skip
    sim = FlaggerSim(stack.url, _for_test(_canary(), model="podinfo", candidate="podold"),
                     "old-2")  # fmt: skip
    assert sim.iterate() == "weight 10"
    assert sim.iterate() == "waiting for promotion"  # no calls since: nothing judged yet


def test_bad_metadata_and_tokens_are_refused(stack: Stack) -> None:
    url = f"{stack.url}/api/v1/judge/flagger/rollout"
    base = {"name": "podinfo", "namespace": "models", "phase": "Progressing", "checksum": "x"}
    r = http.post(url, json={**base, "metadata": {"token": JUDGE_TOKEN, "candiate": "v2"}})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "metadata.candiate"
    r = http.post(url, json={**base, "metadata": {"token": JUDGE_TOKEN, "weight": "ten"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "metadata.weight"
    assert http.post(url, json={**base, "metadata": {}}).status_code == 401
    assert http.post(url, json={**base, "metadata": {"token": "no"}}).status_code == 403
    unknown = {**base, "name": "nope", "metadata": {"token": JUDGE_TOKEN}}
    assert http.post(url, json=unknown).status_code == 404
    post_rollout = f"{stack.url}/api/v1/judge/flagger/post-rollout"
    r = http.post(post_rollout, json={**base, "metadata": {"token": JUDGE_TOKEN}})
    assert r.status_code == 422
    # Flagger's own event metadata is not refused
    event = {**base, "metadata": {"token": JUDGE_TOKEN, "eventMessage": "m", "eventType": "t",
                                  "timestamp": "1", "model": "podinfo"}}  # fmt: skip
    assert http.post(url, json=event).status_code == 200
