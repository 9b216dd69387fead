from pathlib import Path

from sqlalchemy import inspect

from coalmine.store.engine import open_engine
from coalmine.store.schema import metadata


def test_migrations_create_every_table_in_the_schema(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    # a second open (another process, a restart) is a no-op, not an error
    open_engine(f"sqlite:///{tmp_path / 'c.db'}").dispose()
    engine.dispose()


def test_migrations_create_every_column_of_the_schema(tmp_path: Path) -> None:
    """The Alembic chain and schema.py must not drift apart (a column in one only)."""
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")
    inspector = inspect(engine)
    for name, table in metadata.tables.items():
        migrated = {c["name"] for c in inspector.get_columns(name)}
        assert set(table.columns.keys()) == migrated, name
    engine.dispose()
