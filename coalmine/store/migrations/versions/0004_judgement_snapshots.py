"""Judgement snapshots: every evaluation's judgement, so dashboards draw it over time.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "judgement_snapshots",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("canary_weight_bp", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("judgement", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_judgement_snapshots_rollout_id", "judgement_snapshots", ["rollout_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("judgement_snapshots")
