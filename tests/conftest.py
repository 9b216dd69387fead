"""Shared fixtures. Keep additive: several packages' tests rely on these.

Store fixtures: `store_url` is parametrized over every backend (a SQLite file and a real
PostgreSQL 15 server started for the session), so one contract suite runs on both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from coalmine.store.engine import open_engine

PG_BIN = Path(os.environ.get("COALMINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_TEMPLATE = "coalmine_template"


def _as_postgres_user(args: list[str]) -> list[str]:
    # postgres refuses to run as root; the Debian package gives us a `postgres` OS user
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _run(args: list[str]) -> None:
    subprocess.run(_as_postgres_user(args), check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL 15 server for the session; yields the URL of a migrated database.

    That database (`coalmine`) is shared by the session: tests wanting an empty store use
    `store_url`/`store_engine`, which copy a private migrated template per test. The server
    listens only on a Unix socket in a private directory (no port to collide on), with fsync
    off: tests check behaviour, not durability. Skipped only if the binaries are missing
    (`.ci/run` installs them).
    """
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found under {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="coalmine-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    _run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
          "-E", "UTF8", "--no-sync"])  # fmt: skip
    options = f"-k {root} -c listen_addresses='' -F -c max_connections=300"
    _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"])
    admin = f"postgresql+psycopg://postgres@/postgres?host={root}"
    try:
        _create_database(admin, PG_TEMPLATE)
        open_engine(_database(admin, PG_TEMPLATE)).dispose()  # migrate once, copy per test
        _create_database(admin, "coalmine", PG_TEMPLATE)
        yield _database(admin, "coalmine")
    finally:
        subprocess.run(
            _as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _create_database(admin_url: str, name: str, template: str | None = None) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            suffix = f" TEMPLATE {template}" if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    finally:
        engine.dispose()


def fresh_postgres_database(server_url: str) -> str:
    """A new, already migrated database on the server of `server_url`; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _create_database(_database(server_url, "postgres"), name, PG_TEMPLATE)
    return _database(server_url, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty, migrated Coalmine store: a SQLite file, then a PostgreSQL DB."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coalmine.db'}"
        open_engine(url).dispose()
        return url
    return fresh_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store_engine(store_url: str) -> Iterator[Engine]:
    """An open Engine on `store_url`, disposed after the test."""
    engine = open_engine(store_url)
    try:
        yield engine
    finally:
        engine.dispose()
