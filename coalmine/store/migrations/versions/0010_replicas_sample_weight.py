"""predictions.sample_weight: how many calls a row stands for.

A stable call logged while no rollout runs on its model may be sampled
(`logging.stable_sample_rate`); the row kept stores 1/rate so counts of calls stay
estimable. NULL means 1: the row was kept in full (every existing row).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column without a default: no table rewrite, on SQLite or PostgreSQL (where
    # it reaches every partition of the log)
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("sample_weight", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("sample_weight")
