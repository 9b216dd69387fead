"""The paired canary through the real gateway: each request the canary answers is also
mirrored to the stable version (role "paired"), logged but never returned to the user.

Upstreams are real aiohttp servers on loopback; which server saw which request and what the
gateway logged are read from the servers and the store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import (
    RunningGateway,
    StartGateway,
    Upstream,
    free_port,
    make_config,
    start_on_route,
)

V1 = "/v1/models/m:predict"


async def _rows_until(gw: RunningGateway, role: str, n: int) -> list[Any]:
    for _ in range(100):
        rows = [r for r in gw.rows() if r.role == role]
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    return [r for r in gw.rows() if r.role == role]


async def test_canary_requests_are_paired_with_stable_and_the_user_gets_the_canary(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 50})
    gw = await start_on_route(start_gateway, config, paired=True, rollout_id=3)
    answers = {}
    for i in range(60):
        status, headers, body = await gw.post(
            V1, headers={"X-User-Id": f"u{i}", "X-Request-ID": f"r{i}"}
        )
        assert status == 200
        answers[f"r{i}"] = (headers["X-Model-Version"], body)
    canary_ids = {rid for rid, (v, _) in answers.items() if v == "v2"}
    assert 10 < len(canary_ids) < 50  # a 50% sticky split
    # the user of a canary request sees the canary's answer only
    for rid in canary_ids:
        assert b"label-v2" in answers[rid][1] and b"label-v1" not in answers[rid][1]
    paired = await _rows_until(gw, "paired", len(canary_ids))
    # one paired copy per canary request, answered by the stable version, and none for
    # the requests stable served anyway
    assert {r.request_id for r in paired} == canary_ids
    assert len(paired) == len(canary_ids)
    assert all(r.version == "v1" and r.status == 200 for r in paired)
    assert all("label-v1" in r.prediction for r in paired), paired[0].prediction
    assert all(r.rollout_id == 3 for r in paired)
    stable_seen = [s["headers"]["X-Request-ID"] for s in upstreams["v1"].seen]
    assert set(stable_seen) == set(answers)  # served the stable users, mirrored the rest
    marked = [s for s in upstreams["v1"].seen if s["headers"].get("X-Shadow") == "1"]
    assert {s["headers"]["X-Request-ID"] for s in marked} == canary_ids
    roles = {r.request_id: r.role for r in gw.rows() if r.role in ("canary", "stable")}
    assert {rid for rid, role in roles.items() if role == "canary"} == canary_ids


async def test_without_paired_no_stable_copy_is_sent(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 100})
    gw = await start_gateway(config)
    for i in range(10):
        status, headers, _ = await gw.post(V1, headers={"X-Request-ID": f"r{i}"})
        assert status == 200 and headers["X-Model-Version"] == "v2"
    await gw.stop()
    assert not upstreams["v1"].seen
    assert not [r for r in gw.rows() if r.role == "paired"]


async def test_a_dead_or_slow_stable_copy_never_touches_the_canary_answer(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    # the stable version is unreachable (nothing listens on its port): every paired copy
    # fails, and every canary answer is still the canary's, a 200
    dead = f"http://127.0.0.1:{free_port()}"
    config = make_config(
        tmp_path,
        {"v1": dead, "v2": upstreams["v2"].url},
        routing={"canary": "v2", "canary_weight": 100},
        gateway={"shadow": {"timeout_s": 0.5}},
    )
    gw = await start_on_route(start_gateway, config, paired=True)
    for i in range(20):
        status, headers, body = await gw.post(V1, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
        assert headers["X-Model-Version"] == "v2" and b"label-v2" in body
    mirror = gw.runner.gateway.mirror
    async with asyncio.timeout(10):  # each copy logged, or held back by the backoff unlogged
        while len([r for r in gw.rows() if r.role == "paired"]) + mirror.unlogged < 20:
            await asyncio.sleep(0.02)
        # a copy held back is counted before its canary call: that call's row may come later
        while len([r for r in gw.rows() if r.role == "canary"]) < 20:
            await asyncio.sleep(0.02)
    paired = [r for r in gw.rows() if r.role == "paired"]
    assert paired and len(paired) + mirror.unlogged == 20
    assert all(r.status == 0 and r.error_class is not None for r in paired)
    canary = [r for r in gw.rows() if r.role == "canary"]
    assert len(canary) == 20 and all(r.status == 200 for r in canary)


async def _label_all(gw: RunningGateway, labels: dict[str, str]) -> None:
    items = [{"request_id": rid, "label": label} for rid, label in labels.items()]
    status, _, body = await gw.post("/v1/feedback", items)
    assert status == 200, body


def _judge(gw: RunningGateway, *, paired: bool) -> dict[str, Any]:
    from coalmine.analysis.criteria import Criterion
    from coalmine.analysis.engine import Evaluator

    ev = Evaluator(
        gw.engine, model="m", candidate="v2", baseline="v1", mode="canary", paired=paired,
        criteria=[Criterion.model_validate({"metric": "accuracy", "margin": 0.02}),
                  Criterion.model_validate({"metric": "error_rate"})],
    )  # fmt: skip
    judgement = ev.evaluate()
    return {r.name: r for r in judgement.results if r.slice is None}


async def test_accuracy_is_judged_on_the_pairs_and_errors_on_served_calls(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 30})
    gw = await start_on_route(start_gateway, config, paired=True)
    versions = {}
    for i in range(200):
        _, headers, _ = await gw.post(V1, headers={"X-User-Id": f"u{i}", "X-Request-ID": f"r{i}"})
        versions[f"r{i}"] = headers["X-Model-Version"]
    on_canary = sum(v == "v2" for v in versions.values())
    await _rows_until(gw, "paired", on_canary)
    # the truth is v1's answer: the canary is wrong on every request it answered
    await _label_all(gw, {rid: "label-v1" for rid in versions})
    await gw.stop()  # flush the log

    results = _judge(gw, paired=True)
    accuracy, errors = results["accuracy"], results["error_rate"]
    # accuracy: one pair per labelled canary request (canary vs the stable's copy)
    assert accuracy.n_candidate == accuracy.n_baseline == on_canary > 0
    assert accuracy.verdict.value == "FAIL"
    assert accuracy.estimate == pytest.approx(-1.0)  # paired difference: always wrong vs right
    # error rate: each version's own served calls, the stable's copies not among them
    assert (errors.n_candidate, errors.n_baseline) == (on_canary, 200 - on_canary)

    # the same log judged as an unpaired canary compares the canary with stable's own users
    unpaired = _judge(gw, paired=False)["accuracy"]
    assert (unpaired.n_candidate, unpaired.n_baseline) == (on_canary, 200 - on_canary)


async def test_agreement_with_stable_is_judged_in_a_paired_canary(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    from coalmine.analysis.criteria import Criterion
    from coalmine.analysis.engine import Evaluator

    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(tmp_path, urls, routing={"canary": "v2", "canary_weight": 100})
    gw = await start_on_route(start_gateway, config, paired=True)
    for i in range(40):
        status, _, _ = await gw.post(V1, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
    await _rows_until(gw, "paired", 40)
    await gw.stop()
    agreement = [Criterion.model_validate({"metric": "agreement", "min": 0.9})]
    with pytest.raises(ValueError, match="agreement can be judged in shadow only"):
        Evaluator(gw.engine, model="m", candidate="v2", baseline="v1", mode="canary",
                  criteria=agreement)  # fmt: skip
    ev = Evaluator(gw.engine, model="m", candidate="v2", baseline="v1", mode="canary",
                   criteria=agreement, paired=True)  # fmt: skip
    [result] = [r for r in ev.evaluate().results if r.slice is None]
    # v2 never answers what v1 does: agreement 0 on 40 same-request pairs
    assert (result.n_candidate, result.verdict.value) == (40, "FAIL")
    assert result.estimate == 0.0


async def test_a_hung_stable_copy_is_not_waited_for(
    tmp_path: Path, upstreams: dict[str, Upstream], start_gateway: StartGateway
) -> None:
    # the stable version holds each copy for 3 s: every canary answer arrives while its
    # copy is still held (none logged yet), so the user never waited on it
    upstreams["v1"].mode, upstreams["v1"].delay_s = "slow", 3.0
    urls = {v: upstreams[v].url for v in ("v1", "v2")}
    config = make_config(
        tmp_path, urls, routing={"canary": "v2", "canary_weight": 100},
        gateway={"shadow": {"timeout_s": 10, "workers": 2, "queue_size": 4}},
    )  # fmt: skip
    gw = await start_on_route(start_gateway, config, paired=True)
    for i in range(12):
        status, headers, body = await gw.post(V1, headers={"X-Request-ID": f"r{i}"})
        assert status == 200 and headers["X-Model-Version"] == "v2" and b"label-v2" in body
    await asyncio.sleep(0.3)  # the canary's rows are flushed (every 50 ms)
    assert len([r for r in gw.rows() if r.role == "canary"]) == 12
    assert not [r for r in gw.rows() if r.role == "paired"]
    await gw.stop()  # drains what it can in 2 s, counts the rest as dropped
    paired = [r for r in gw.rows() if r.role == "paired"]
    # 2 workers + 4 queued at most: the bounded queue dropped the rest rather than wait,
    # and every copy not logged is counted as dropped
    assert len(paired) <= 6
    assert gw.runner.gateway.mirror.dropped == 12 - len(paired)
