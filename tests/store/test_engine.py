"""The migrated schema is the same on every backend, and reopening is a no-op."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from coalmine.store.engine import open_engine
from coalmine.store.schema import metadata


def test_every_table_and_column_of_the_schema_exists(store_engine: Engine, store_url: str) -> None:
    inspector = inspect(store_engine)
    for name, table in metadata.tables.items():
        columns = {c["name"] for c in inspector.get_columns(name)}
        assert set(table.columns.keys()) <= columns, name
    open_engine(store_url).dispose()  # a second process starting up migrates nothing
