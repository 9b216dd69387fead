"""Several processes starting at once on an empty PostgreSQL all come up: a replicated
deployment (Kubernetes starts every pod together) must not depend on one starting first."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import create_engine, inspect

from tests.conftest import _create_database, _database

pytestmark = pytest.mark.postgres

STARTERS = 6
CHILD = """
import sys, time
from coalmine.store.engine import open_engine
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
open_engine(sys.argv[2]).dispose()
"""


def test_processes_migrating_an_empty_database_together_all_start(postgres_server: str) -> None:
    name = f"empty_{uuid.uuid4().hex[:10]}"
    _create_database(_database(postgres_server, "postgres"), name)  # no tables at all
    url = _database(postgres_server, name)
    start = time.time() + 3.0  # every child imports first, then all migrate at this moment
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(start), url], env=dict(os.environ),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(STARTERS)
    ]  # fmt: skip
    results = [(c.wait(timeout=120), c.stderr.read() if c.stderr else "") for c in children]
    for c in children:
        for stream in (c.stdout, c.stderr):
            if stream is not None:
                stream.close()
    failed = [next((line for line in err.splitlines() if "Error" in line), err[-300:])
              for code, err in results if code != 0]  # fmt: skip
    assert failed == [], failed
    engine = create_engine(url)
    try:
        assert {"predictions", "feedback", "rollouts", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
