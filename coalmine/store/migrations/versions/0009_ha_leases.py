"""leases, rollout_events.leader_token: controller high availability.

`leases` holds the controllers' leader lease (holder, a fencing token that only grows, the
expiry by the database's clock); every transition the leader writes checks its token in the
same transaction and records it on the event row (NULL for an operator's command).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256)),
        sa.Column("token", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
    )
    with op.batch_alter_table("rollout_events") as batch:
        batch.add_column(sa.Column("leader_token", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("rollout_events") as batch:
        batch.drop_column("leader_token")
    op.drop_table("leases")
