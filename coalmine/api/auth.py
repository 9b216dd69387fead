"""Bearer-token authentication for the control API: 401 without a token, 403 with a wrong one.

The token is compared in constant time on SHA-256 digests (equal lengths, so not even the
token's length leaks through timing) and is never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["BearerAuth", "generate_token"]

_scheme = HTTPBearer(auto_error=False, description="Control API token (COALMINE_TOKEN)")


def generate_token() -> str:
    return secrets.token_urlsafe(32)


class BearerAuth:
    """A FastAPI dependency checking `Authorization: Bearer <token>` in constant time."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the control API needs a non-empty token")
        self._digest = hashlib.sha256(token.encode()).digest()

    async def __call__(self, request: Request) -> None:
        credentials: HTTPAuthorizationCredentials | None = await _scheme(request)
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = hashlib.sha256(credentials.credentials.encode()).digest()
        if not hmac.compare_digest(given, self._digest):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid token")
