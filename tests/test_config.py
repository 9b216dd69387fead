from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coalmine.cli import app
from coalmine.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "gateway.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.model("iris").routing.canary_weight == 10
    assert config.model("iris").version("v2").base_url == "http://127.0.0.1:9002"


def test_errors_name_the_field_path_and_reason() -> None:
    data = example()
    data["gateway"]["port"] = 70000
    data["models"][0]["routing"]["canary_weight"] = 10.005
    data["models"][0]["routing"]["stable"] = "v9"
    data["models"][0]["versions"][1]["url"] = "not a url"
    data["logging"]["inputs"] = "everything"
    data["gateway"]["typo_field"] = 1
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    paths = dict(caught.value.errors)
    assert "gateway.port" in paths
    assert "0.01" in paths["models.0.routing.canary_weight"]
    assert "gateway.typo_field" in paths
    assert "logging.inputs" in paths
    assert "models.0.versions.1.url" in paths


def test_unknown_routing_version_is_reported() -> None:
    data = example()
    data["models"][0]["routing"]["stable"] = "v9"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert any("v9" in reason for _, reason in caught.value.errors)


def test_sticky_needs_exactly_one_source() -> None:
    data = example()
    data["models"][0]["routing"]["sticky"] = {"header": "X-User-Id", "cookie": "uid"}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.errors[0][0].startswith("models.0.routing.sticky")


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output and "1 model(s)" in ok.output

    data = example()
    data["gateway"]["port"] = -1
    data["models"][0]["routing"]["mirror_share"] = 101
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "gateway.port" in result.output
    assert "models.0.routing.mirror_share" in result.output


def test_validate_reports_yaml_syntax_and_missing_file(tmp_path: Path) -> None:
    runner = CliRunner()
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    assert runner.invoke(app, ["validate", str(broken)]).exit_code == 1
    assert runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")]).exit_code == 1


def test_example_rollout_spec_is_valid_for_the_controller_and_the_engine() -> None:
    from coalmine.analysis.criteria import Criterion
    from coalmine.rollout.spec import load_spec

    spec = load_spec(EXAMPLE.parent / "rollout.yaml")
    assert [s.weight for s in spec.canary.steps] == [1, 5, 25, 50, 100]
    criteria = [*(spec.shadow.criteria or []), *(spec.canary.criteria or [])]
    assert len(criteria) == 8
    for c in criteria:
        # as rollout.judge builds them: rule_out is the controller's step floor, not the engine's
        Criterion.model_validate(c.model_dump(exclude={"rule_out"}))


def test_a_model_with_one_version_needs_no_routing_block() -> None:
    one = {"models": [{"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}]}]}
    assert parse_config(one).model("m").routing.stable == "v1"
    two = {"name": "m", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"},
                                     {"name": "v2", "url": "http://127.0.0.1:8"}]}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config({"models": [two]})
    assert caught.value.errors == [("models.0.routing", "Field required")]


DUPLICATED = """\
gateway:
  port: 8080
models:
  - name: m
    versions: [{name: v1, url: "http://127.0.0.1:9001"}, {name: v2, url: "http://127.0.0.1:9002"}]
    routing:
      stable: v1
      canary: v2
      canary_weight: 10
      canary_weight: 50
"""


def test_a_key_given_twice_is_refused_with_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATED)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    ((where, reason),) = caught.value.errors
    assert where == "(yaml)"
    assert "duplicate key 'canary_weight' at line 10 (first given at line 9)" in reason
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "duplicate key 'canary_weight'" in result.output


def test_duplicate_keys_in_a_rollout_spec_and_flow_mappings_are_refused(tmp_path: Path) -> None:
    from coalmine.rollout.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("canary:\n  steps: [1, 5]\n  max_duration_s: 60\n  steps: [50, 100]\n")
    with pytest.raises(ConfigError, match="duplicate key 'steps' at line 4"):
        load_spec(spec)
    flow = tmp_path / "flow.yaml"
    flow.write_text("gateway: {port: 1, port: 2}\nmodels: []\n")
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_config(flow)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "base: &base {name: v1, url: 'http://127.0.0.1:9001'}\n"
        "models:\n"
        "  - name: m\n"
        "    versions: [{<<: *base, url: 'http://127.0.0.1:9009'}]\n"
    )
    from coalmine.config import read_yaml

    data = read_yaml(path)
    assert data["models"][0]["versions"] == [{"name": "v1", "url": "http://127.0.0.1:9009"}]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9002/?token=x", "a base URL takes no query (?token=x)"),
        ("http://127.0.0.1:9002/models#v2", "a base URL takes no fragment (#v2)"),
    ],
)
def test_a_version_url_with_a_query_or_fragment_is_refused(url: str, reason: str) -> None:
    data = example()
    data["models"][0]["versions"][1]["url"] = url
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    errors = dict(caught.value.errors)
    assert reason in errors["models.0.versions.1.url"]
    data["models"][0]["versions"][1]["url"] = "http://127.0.0.1:9002/prefix/"
    assert parse_config(data).model("iris").version("v2").base_url == "http://127.0.0.1:9002/prefix"
