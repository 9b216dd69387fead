"""Who may ask for a judgement: the control API's token, or the read-only judge token.

The judge endpoints change nothing in Coalmine: they read the prediction log and answer.
So a cluster's rollout tool gets its own token (`api.judge_token` or
$COALMINE_JUDGE_TOKEN), which opens these endpoints and nothing else: a leaked Argo or
Flagger secret cannot start, promote or abort a rollout. Argo Rollouts sends it as
`Authorization: Bearer` (from a Secret, through an AnalysisTemplate argument); Flagger's
webhooks cannot send headers, so they carry it in the webhook's `metadata.token`.
Comparisons are constant-time on SHA-256 digests; tokens are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["JudgeAuth"]

_scheme = HTTPBearer(
    auto_error=False, description="the control API token or the read-only judge token"
)


class JudgeAuth:
    def __init__(self, token: str, judge_token: str | None = None) -> None:
        if not token:
            raise ValueError("the judge endpoints need a non-empty token")
        self._digests = [hashlib.sha256(t.encode()).digest() for t in (token, judge_token) if t]

    def check(self, given: str | None) -> None:
        """401 without a token, 403 with a wrong one."""
        if not given:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing token (Authorization: Bearer <token>, or metadata.token for Flagger)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(given.encode()).digest()
        # compare with every token, so the time does not say which one matched
        ok = [hmac.compare_digest(digest, d) for d in self._digests]
        if not any(ok):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid token")

    async def header(self, request: Request) -> None:
        """The FastAPI dependency for routes authenticated by header."""
        credentials: HTTPAuthorizationCredentials | None = await _scheme(request)
        self.check(credentials.credentials if credentials else None)
