"""PostgreSQL: the prediction log partitioned by time (one partition a UTC day).

Retention then drops a whole day's partition instead of deleting rows one by one (no bloat,
no vacuum debt, no long lock). The partitions are `predictions_YYYYMMDD` (RANGE on `ts`) plus
`predictions_default`, which takes any row no day partition covers (older history, a clock
far off); `coalmine.store.retention` creates the days ahead and deletes old rows of the
default partition in batches. A partitioned table's primary key must contain the partition
key, so it becomes (id, ts); ids still come from the one sequence, unique and increasing.

Existing rows are copied over: those of yesterday and the next days into day partitions,
older ones into the default partition. SQLite keeps its plain table (retention deletes
there in batches): this migration does nothing on it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

from coalmine.store.retention import create_day_partitions_in

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")  # writers wait, none lost
    op.execute(
        "CREATE TABLE predictions_partitioned "
        "(LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts)"
    )
    op.execute(
        "ALTER TABLE predictions_partitioned "
        "ADD CONSTRAINT predictions_partitioned_pkey PRIMARY KEY (id, ts)"
    )
    op.execute("CREATE TABLE predictions_default PARTITION OF predictions_partitioned DEFAULT")
    create_day_partitions_in(bind, table="predictions_partitioned", days_back=1)
    op.execute("INSERT INTO predictions_partitioned SELECT * FROM predictions")
    # the id sequence belongs to the old table: move it before dropping that table
    sequence = bind.exec_driver_sql(
        "SELECT pg_get_serial_sequence('predictions', 'id')"
    ).scalar_one()
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY predictions_partitioned.id")
    op.execute("DROP TABLE predictions")
    op.execute("ALTER TABLE predictions_partitioned RENAME TO predictions")
    op.execute("ALTER INDEX predictions_partitioned_pkey RENAME TO predictions_pkey")
    op.create_index("ix_predictions_model_id", "predictions", ["model", "id"])
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    op.execute(
        "CREATE TABLE predictions_plain (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    op.execute("INSERT INTO predictions_plain SELECT * FROM predictions")
    sequence = bind.exec_driver_sql(
        "SELECT pg_get_serial_sequence('predictions', 'id')"
    ).scalar_one()
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY predictions_plain.id")
    op.execute("DROP TABLE predictions CASCADE")  # and every partition
    op.execute("ALTER TABLE predictions_plain RENAME TO predictions")
    op.execute("ALTER TABLE predictions ADD CONSTRAINT predictions_pkey PRIMARY KEY (id)")
    op.create_index("ix_predictions_model_id", "predictions", ["model", "id"])
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
