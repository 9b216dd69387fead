"""canary.paired in the rollout spec: default off, and agreement criteria allowed in a canary
only when it is paired (the stable version then answers the canary's own requests)."""

from __future__ import annotations

import pytest

from coalmine.config import ConfigError
from coalmine.rollout.judge import build_criteria
from coalmine.rollout.spec import parse_spec


def _spec(paired: bool | None) -> dict[str, object]:
    canary: dict[str, object] = {"criteria": [{"metric": "agreement", "min": 0.9}]}
    if paired is not None:
        canary["paired"] = paired
    return {"shadow": {"enabled": False}, "canary": canary}


def test_paired_is_off_by_default() -> None:
    assert parse_spec({}).canary.paired is False


def test_agreement_in_a_canary_needs_it_paired() -> None:
    for paired in (None, False):
        with pytest.raises(ConfigError, match="agreement can be judged in shadow only"):
            build_criteria(parse_spec(_spec(paired)), "canary")
    [c] = build_criteria(parse_spec(_spec(True)), "canary")
    assert (c.metric, c.min) == ("agreement", 0.9)
