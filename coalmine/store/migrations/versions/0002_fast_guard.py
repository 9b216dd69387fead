"""Fast guard: a per-model threshold of consecutive canary failures, and the trips it made.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        # 0 = use the gateway's default threshold
        batch.add_column(
            sa.Column("guard_failures", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "guard_trips",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("rollout_id", sa.Integer),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_guard_trips_model_id", "guard_trips", ["model", "id"])


def downgrade() -> None:
    op.drop_table("guard_trips")
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("guard_failures")
