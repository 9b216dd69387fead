"""A store URL's password is a secret: what Coalmine prints about its config hides it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from coalmine.cli import app
from coalmine.config import hide_password


def test_coalmine_validate_prints_the_store_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "store: {url: 'postgresql+psycopg://coalmine:Pg7Secr3tPw@db.internal:5432/coalmine'}\n"
        "models: [{name: m, versions: [{name: v1, url: 'http://127.0.0.1:9'}],"
        " routing: {stable: v1}}]\n"
    )
    out = CliRunner().invoke(app, ["validate", str(config)])
    assert out.exit_code == 0, out.output
    assert "Pg7Secr3tPw" not in out.output
    assert "coalmine:***@db.internal:5432/coalmine" in out.output


def test_hide_password() -> None:
    assert hide_password("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    assert hide_password("postgresql://u:p:q@h:1/db") == "postgresql://u:***@h:1/db"
    assert hide_password("postgresql://u@h/db") == "postgresql://u@h/db"
    assert hide_password("sqlite:///var/lib/coalmine.db") == "sqlite:///var/lib/coalmine.db"
