"""The tables of Coalmine's one database: prediction log, feedback and live routing.

Alembic migrations in `coalmine/store/migrations/` create these; the table objects here are
what SQLAlchemy Core statements are written against. Times are Unix epoch seconds (float).
JSON payloads are stored as text so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    Column("scores", Text),  # JSON of the probabilities/scores beside the prediction, if any
    # calls this row stands for (1/rate of a sampled stable row); NULL = 1, kept in full
    Column("sample_weight", Float),
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
    # a fresh instance of the stable version, routed a share like the canary's (role
    # "baseline"); in shadow it also receives the mirrored copies
    Column("baseline_url", String(512)),
    Column("baseline_bp", Integer, nullable=False, default=0),  # 0..10000
    # paired canary: each request the canary answers is also mirrored to the stable
    # version (role "paired"), so quality criteria compare both on the same requests
    Column("paired", Boolean, nullable=False, default=False),
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

# A rollout of one candidate version of one model. `version` is bumped by every transition
# (compare-and-swap), so a transition is applied exactly once however many controllers run.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("active_model", String(64), unique=True),  # = model while active, else NULL
    Column("candidate", String(64), nullable=False),
    Column("candidate_url", String(512), nullable=False),
    Column("baseline", String(64)),
    Column("baseline_url", String(512)),
    Column("previous_stable", String(64), nullable=False),  # what `rollback MODEL` restores
    Column("spec", Text, nullable=False),  # JSON of the RolloutSpec
    Column("phase", String(16), nullable=False),
    Column("step_index", Integer, nullable=False, default=0),
    Column("canary_weight_bp", Integer, nullable=False, default=0),
    Column("mirror_bp", Integer, nullable=False, default=0),
    Column("paused_phase", String(16)),  # the phase a paused rollout resumes into
    Column("approved_step", Integer, nullable=False, default=-1),
    Column("started_at", Float, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("outcome", String(16)),  # promoted | rolled_back | aborted
    Column("reason", Text),
    Column("last_judgement", Text),  # JSON of the latest judgement
    Column("guard_seen_id", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=1),
    Index("ix_rollouts_model_id", "model", "id"),
)

rollout_events = Table(
    "rollout_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False),  # the rollout version this transition produced
    Column("ts", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("from_phase", String(16), nullable=False),
    Column("to_phase", String(16), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("canary_weight_bp", Integer, nullable=False),
    Column("mirror_bp", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", String(16)),  # pass | not_fail: what a promotion rested on
    Column("judgement", Text),  # JSON of the judgement that caused it
    # the lease token of the controller that wrote it (None: an operator's command)
    Column("leader_token", BigInteger),
    UniqueConstraint("rollout_id", "seq", name="uq_rollout_events_seq"),
    Index("ix_rollout_events_rollout_id", "rollout_id", "id"),
)

# Every evaluation's judgement of a rollout (not only those that caused a transition), so
# the dashboard and the report can draw each criterion's estimate and bounds over time.
judgement_snapshots = Table(
    "judgement_snapshots",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("canary_weight_bp", Integer, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("judgement", Text, nullable=False),  # JSON of Judgement.to_dict()
    Index("ix_judgement_snapshots_rollout_id", "rollout_id", "id"),
)

# The webhook outbox: one row per (transition, webhook URL), inserted in the transition's
# transaction; a sender delivers due rows and records the result, so a delivery survives a
# controller killed at any moment.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False),  # the rollout version of the transition
    Column("url", String(1024), nullable=False),
    Column("secret", Text),  # None: $COALMINE_WEBHOOK_SECRET at delivery time
    Column("payload", Text, nullable=False),  # JSON body, exactly as signed and sent
    Column("state", String(16), nullable=False),  # pending | delivered | rejected | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("last_error", Text),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

# Leader leases (coalmine.rollout.lease): one row per name, e.g. "controller". `token` only
# grows (each take adds one); `expires_at` is the database's clock, epoch seconds.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(256)),
    Column("token", BigInteger, nullable=False, default=0),
    Column("expires_at", Float, nullable=False, default=0.0),
)
