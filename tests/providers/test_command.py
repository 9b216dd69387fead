"""`coalmine nginx-snippet`: prints what the operator's nginx needs once (the same
`location_snippet` the real-nginx tests serve traffic with)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from coalmine.cli import app


def _config(tmp_path: Path) -> Path:
    versions = [{"name": "v1", "url": "http://127.0.0.1:9001"}]
    path = tmp_path / "coalmine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "iris",
                        "versions": versions,
                        "traffic": {
                            "provider": "nginx",
                            "config_path": "/etc/nginx/coalmine/iris.conf",
                            "main_config": "/etc/nginx/nginx.conf",
                            "pid_file": "/run/nginx.pid",
                        },
                    },
                    {"name": "churn", "versions": versions},
                ]
            }
        )
    )
    return path


def test_the_snippet_names_the_include_and_the_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["nginx-snippet", "iris", "--config", str(_config(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "include /etc/nginx/coalmine/iris.conf;" in result.output
    assert "proxy_pass http://$coalmine_iris_upstream;" in result.output
    assert "mirror /_coalmine/iris/shadow;" in result.output


def test_a_model_not_on_nginx_or_unknown_is_refused(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    builtin = CliRunner().invoke(app, ["nginx-snippet", "churn", "--config", config])
    assert builtin.exit_code == 2 and "'builtin', not nginx" in builtin.output
    unknown = CliRunner().invoke(app, ["nginx-snippet", "nope", "--config", config])
    assert unknown.exit_code == 2 and "'nope' is not in" in unknown.output
