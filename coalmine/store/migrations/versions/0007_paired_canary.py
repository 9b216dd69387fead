"""routes.paired: the paired canary.

While true, each request the canary answers is also mirrored to the stable version and
logged with role "paired" (never returned to the user), so the canary's model-quality
criteria are judged on paired predictions of the same requests.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.add_column(sa.Column("paired", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("paired")
