"""Alembic environment: migrations run in-process against the Engine Coalmine opened."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

engine: Engine = context.config.attributes["engine"]
_MIGRATION_LOCK = 0x636F616D  # "coam"

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # several processes (gateway replicas, controllers) may start at once: one migrates,
        # the others wait here and then find the schema at head
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
