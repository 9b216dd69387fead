"""The judgement as an Argo Rollouts `web` metric (and for any tool that polls a URL).

    GET  /api/v1/judge/models/{model}?candidate=V&baseline=V&weight=W&mode=canary&since=T
    POST /api/v1/judge/models/{model}   {"candidate", "baseline", "weight", "mode", "since",
                                          "spec": {a rollout spec: criteria, min_samples, ...}}

Argo's web provider (metricproviders/webmetric/webmetric.go) sends the method and the
headers the AnalysisTemplate lists (the bearer token from a Secret through an argument),
`jsonBody` as the POST body, waits `timeoutSeconds` (10 s by default), counts any non-2xx
answer or a `jsonPath` that finds nothing as a measurement Error, and evaluates
`successCondition`/`failureCondition` on the value `jsonPath` picks. So a judgement is
always 200 with `verdict` set (PASS, FAIL or INCONCLUSIVE: decision.py); 4xx is kept for
a request that cannot be judged (unknown model 404, invalid field 422, token 401/403),
which Argo counts toward `consecutiveErrorLimit`. GET judges by the spec's defaults; POST
carries a spec. `baseline` defaults to the model's stable version in Coalmine's store.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from coalmine.config import NAME_PATTERN
from coalmine.integrations.query import make_query
from coalmine.integrations.service import JudgeService

__all__ = ["JudgeBody", "argo_router"]


class JudgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(pattern=NAME_PATTERN, description="the candidate version")
    baseline: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="default: the model's stable version"
    )
    mode: str = Field(default="canary", description="canary (served calls) or shadow")
    weight: float | None = Field(
        default=None, description="the canary's share in percent now: one of spec.canary.steps "
        "(its timing and power floor); default the first step",
    )  # fmt: skip
    since: float | None = Field(
        default=None, description="judge only calls logged at or after this Unix time"
    )
    spec: dict[str, Any] | None = Field(default=None, description="a rollout spec")


def argo_router(service: JudgeService, baseline_of: Any) -> APIRouter:
    """`baseline_of(model)`: the model's stable version in the store, or None."""
    router = APIRouter(tags=["judge"])

    def _judge(model: str, body: JudgeBody) -> dict[str, Any]:
        stable = baseline_of(model)  # 404 for an unknown model, before anything else
        baseline = body.baseline or stable or ""
        q = make_query(
            model=model, candidate=body.candidate, baseline=baseline, mode=body.mode,
            spec=body.spec, weight=body.weight, not_before=body.since,
        )  # fmt: skip
        return service.judge(q)

    @router.get("/models/{model}")
    def judge_get(
        model: str,
        candidate: str = Query(pattern=NAME_PATTERN),
        baseline: str | None = Query(default=None, pattern=NAME_PATTERN),
        mode: str = "canary",
        weight: float | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        """The candidate's judgement by the default criteria (Argo: `method: GET`)."""
        body = JudgeBody(candidate=candidate, baseline=baseline, mode=mode, weight=weight,
                         since=since)  # fmt: skip
        return _judge(model, body)

    @router.post("/models/{model}")
    def judge_post(model: str, body: JudgeBody) -> dict[str, Any]:
        """The candidate's judgement by the body's spec (Argo: `method: POST`, `jsonBody`)."""
        return _judge(model, body)

    return router
