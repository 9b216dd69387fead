"""Path and query parameters shared by the control API's routes, with the bounds the store
can hold: an id past a signed 64-bit integer is a 422 naming it, not an OverflowError (500)
from the database driver (found by the schemathesis run in tests/fuzz/)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

__all__ = ["MAX_ID", "After", "RolloutId"]

MAX_ID = 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT

RolloutId = Annotated[int, Path(ge=1, le=MAX_ID, description="a rollout's id")]
After = Annotated[int, Query(ge=0, le=MAX_ID, description="events after this sequence number")]
