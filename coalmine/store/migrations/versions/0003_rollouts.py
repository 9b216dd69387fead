"""Rollouts and their transition events.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        # equals `model` while the rollout is active, NULL once it ended: the unique
        # constraint then allows one active rollout per model on SQLite and PostgreSQL alike
        sa.Column("active_model", sa.String(64), unique=True),
        sa.Column("candidate", sa.String(64), nullable=False),
        sa.Column("candidate_url", sa.String(512), nullable=False),
        sa.Column("baseline", sa.String(64)),
        sa.Column("baseline_url", sa.String(512)),
        sa.Column("previous_stable", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False, server_default="0"),
        sa.Column("canary_weight_bp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mirror_bp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("paused_phase", sa.String(16)),
        sa.Column("approved_step", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("step_started_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("outcome", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("last_judgement", sa.Text),
        sa.Column("guard_seen_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("ix_rollouts_model_id", "rollouts", ["model", "id"])
    op.create_table(
        "rollout_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        # the rollout's version this transition produced: unique, so a transition that two
        # controllers both attempt is recorded once
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_phase", sa.String(16), nullable=False),
        sa.Column("to_phase", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("canary_weight_bp", sa.Integer, nullable=False),
        sa.Column("mirror_bp", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.String(16)),
        sa.Column("judgement", sa.Text),
        sa.UniqueConstraint("rollout_id", "seq", name="uq_rollout_events_seq"),
    )
    op.create_index("ix_rollout_events_rollout_id", "rollout_events", ["rollout_id", "id"])


def downgrade() -> None:
    op.drop_table("rollout_events")
    op.drop_table("rollouts")
