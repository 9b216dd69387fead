"""A routing edit in the config file after the first start is reported, not silently ignored,
and `coalmine routes diff|apply` show and apply it (refused during a rollout)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine
from typer.testing import CliRunner

from coalmine.cli import app
from coalmine.config import parse_config
from coalmine.store.routes import RouteError, RouteRepository


def _config(store_url: str, salt: str, weight: float = 0) -> dict[str, object]:
    return {
        "store": {"url": store_url},
        "models": [
            {
                "name": "iris",
                "versions": [
                    {"name": "v1", "url": "http://127.0.0.1:9001"},
                    {"name": "v2", "url": "http://127.0.0.1:9002"},
                ],
                "routing": {"stable": "v1", "canary": "v2", "canary_weight": weight, "salt": salt},
            }
        ],
    }


def test_seeding_reports_a_routing_edit_and_apply_makes_it_live(
    store_engine: Engine, store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = RouteRepository(store_engine)
    assert repo.seed_from_config(parse_config(_config(store_url, "old"))) == {}
    edited = parse_config(_config(store_url, "new", weight=10))
    with caplog.at_level(logging.WARNING, "coalmine.store.routes"):
        drift = repo.seed_from_config(edited)
    assert drift == {"iris": [("canary_weight_bp", 1000, 0), ("salt", "new", "old")]}
    assert "coalmine routes apply --config FILE iris" in caplog.text
    assert repo.get("iris").salt == "old"  # type: ignore[union-attr]

    path = tmp_path / "coalmine.yaml"
    path.write_text(yaml.safe_dump(_config(store_url, "new", weight=10)))
    runner = CliRunner()
    shown = runner.invoke(app, ["routes", "diff", "--config", str(path)])
    assert shown.exit_code == 1 and "salt: file 'new', store 'old'" in shown.output
    applied = runner.invoke(app, ["routes", "apply", "iris", "--config", str(path)])
    assert applied.exit_code == 0, applied.output
    state = repo.get("iris")
    assert state is not None and (state.salt, state.canary_weight_bp) == ("new", 1000)
    assert runner.invoke(app, ["routes", "diff", "--config", str(path)]).exit_code == 0


def test_apply_is_refused_while_a_rollout_owns_the_split(
    store_engine: Engine, store_url: str
) -> None:
    repo = RouteRepository(store_engine)
    repo.seed_from_config(parse_config(_config(store_url, "old")))
    repo.set_route("iris", rollout_id=7)
    with pytest.raises(RouteError, match="active rollout #7"):
        repo.apply_config(parse_config(_config(store_url, "new")), ["iris"])
    assert repo.get("iris").salt == "old"  # type: ignore[union-attr]
