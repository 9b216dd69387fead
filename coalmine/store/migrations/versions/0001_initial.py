"""Prediction log, feedback, model versions and live routes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_class", sa.String(32)),
        sa.Column("prediction", sa.Text),
        sa.Column("input", sa.Text),
        sa.Column("slices", sa.Text),
        sa.Column("canary_weight_bp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rollout_id", sa.Integer),
    )
    op.create_index("ix_predictions_model_id", "predictions", ["model", "id"])
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_table(
        "feedback",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("outcomes", sa.Text),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("model", "version"),
    )
    op.create_table(
        "routes",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("stable", sa.String(64), nullable=False),
        sa.Column("canary", sa.String(64)),
        sa.Column("canary_weight_bp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("shadow", sa.String(64)),
        sa.Column("mirror_bp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("salt", sa.String(128), nullable=False),
        sa.Column("rollout_id", sa.Integer),
        sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("routes")
    op.drop_table("model_versions")
    op.drop_table("feedback")
    op.drop_table("predictions")
