"""The tables of Coalmine's one database: prediction log, feedback and live routing.

Alembic migrations in `coalmine/store/migrations/` create these; the table objects here are
what SQLAlchemy Core statements are written against. Times are Unix epoch seconds (float).
JSON payloads are stored as text so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for a big log.
RowId = BigInteger().with_variant(Integer(), "sqlite")

predictions = Table(
    "predictions",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("role", String(16), nullable=False),  # stable | canary | shadow | baseline
    Column("ts", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("status", Integer, nullable=False),  # upstream HTTP status; 0 = no response
    Column("error_class", String(32)),  # None | timeout | connection | http_5xx | http_4xx
    Column("prediction", Text),  # JSON of the parsed prediction, None when unparseable
    Column("input", Text),  # per the logging policy: full, redacted, hashed or None
    Column("slices", Text),  # JSON object of slice attribute -> value
    Column("canary_weight_bp", Integer, nullable=False, default=0),  # split at call time
    Column("rollout_id", Integer),  # the rollout active on the model, if any
    Index("ix_predictions_model_id", "model", "id"),
    Index("ix_predictions_request_id", "request_id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("label", Text),  # JSON of the ground truth
    Column("outcomes", Text),  # JSON object of business outcome -> number
    Column("ts", Float, nullable=False),
    Index("ix_feedback_request_id", "request_id"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("url", String(512), nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("model", "version"),
)

# The live split of each model. The gateway polls `revision`; the controller bumps it.
routes = Table(
    "routes",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("stable", String(64), nullable=False),
    Column("canary", String(64)),
    Column("canary_weight_bp", Integer, nullable=False, default=0),  # 0..10000
    Column("shadow", String(64)),
    Column("mirror_bp", Integer, nullable=False, default=0),  # 0..10000
    Column("salt", String(128), nullable=False),
    Column("rollout_id", Integer),
    Column("revision", Integer, nullable=False, default=1),
    Column("updated_at", Float, nullable=False),
    Column("guard_failures", Integer, nullable=False, default=0),  # 0 = gateway default
)

# Each time the gateway's fast guard routed away from a failing canary; the controller
# reads these and rolls the rollout back.
guard_trips = Table(
    "guard_trips",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("rollout_id", Integer),
    Column("ts", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_guard_trips_model_id", "model", "id"),
)
