"""Baseline routing and the webhook outbox.

- routes.baseline_url / routes.baseline_bp: a fresh instance of the stable version that
  receives a share of traffic like-for-like with the canary (and the shadow's mirrored
  copies in shadow), logged with role "baseline".
- webhook_deliveries: one row per (transition, webhook URL), written in the transition's own
  transaction, so a controller killed right after a transition still delivers it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("baseline_url", sa.String(512)))
        batch.add_column(sa.Column("baseline_bp", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("baseline_bp")
        batch.drop_column("baseline_url")
