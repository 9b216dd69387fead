"""The rollout spec: defaults that work, readable durations, errors with field paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalmine.config import ConfigError
from coalmine.rollout.spec import RolloutSpec, load_spec, parse_spec
from coalmine.rollout.weights import mirror_bp, step_weights_bp


def test_an_empty_spec_is_a_complete_rollout() -> None:
    spec = parse_spec(None)
    assert spec.shadow.enabled and spec.shadow.then == "canary"
    assert spec.step_weights == [1, 5, 25, 50, 100]
    assert step_weights_bp(spec) == [100, 500, 2500, 5000, 10000]
    assert mirror_bp(spec) == 10000
    assert spec.on_failure == "rollback"
    assert spec.canary.on_inconclusive == "hold"


def test_yaml_with_durations_steps_and_gates(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "shadow: {min_duration: 2s, mirror_share: 50}\n"
        "canary:\n"
        "  steps: [10, {weight: 50, min_duration: 1m}, 100]\n"
        "  max_duration: 1h\n"
        "  approval_before: [100]\n"
        "on_failure: pause\n"
    )
    spec = load_spec(path)
    assert spec.shadow.min_duration == 2.0 and mirror_bp(spec) == 5000
    step = spec.canary.steps[1]
    assert spec.canary.step_min_duration(step) == 60.0
    assert spec.canary.step_max_duration(step) == 3600.0
    assert spec.canary.approval_before == [100]
    assert spec.on_failure == "pause"
    # it round-trips through JSON, as the store keeps it
    assert RolloutSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"canary": {"steps": [5, 1]}}, "canary.steps", "increase"),
        ({"canary": {"approval_before": [30]}}, "canary", "not one of the steps"),
        ({"shadow": {"min_duration": "soon"}}, "shadow.min_duration", "duration"),
        ({"on_failure": "explode"}, "on_failure", "rollback"),
        ({"canary": {"steps": [0.001]}}, "canary.steps", "0.01%"),
        ({"shadow": {"enabled": False, "then": "stop"}}, "(top level)", "shadow-only"),
        ({"canray": {}}, "canray", "Extra inputs"),
    ],
)
def test_bad_specs_name_the_field(data: dict[str, object], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(data)
    assert any(p.startswith(path) and reason in r for p, r in info.value.errors), info.value.errors
