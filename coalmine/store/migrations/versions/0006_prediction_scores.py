"""predictions.scores: the probabilities/scores a model returned beside its prediction.

log_loss, auc and score-based user metrics read them; the gateway parses them from each
protocol's response (`coalmine.gateway.scores`). NULL for rows logged before, or when the
answer carried none.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("scores", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("scores")
