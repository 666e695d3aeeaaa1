"""The first schema: tokens, flows and their versions, schedules, runs and their events,
secrets, variables, webhook deliveries, service instances, meta.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "flows",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("last_number", sa.Integer, nullable=False),
    )
    op.create_table(
        "flow_versions",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("executable", sa.Text, nullable=False),
        sa.Column("triggers", sa.Text, nullable=False),
        sa.Column("flow_triggers", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "schedules",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("catchup", sa.Float, nullable=False),
        sa.Column("next_fire", sa.Float, nullable=False),
    )
    op.create_index("ix_schedules_next_fire", "schedules", ["next_fire"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("ended", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("group_name", sa.String(400)),
        sa.Column("group_max", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("rerun_of", sa.String(64)),
        sa.Column("reuse", sa.Text),
        sa.Column("record", sa.Text),
        sa.UniqueConstraint("flow", "idempotency_key", name="uq_runs_idempotency"),
        sa.UniqueConstraint("flow", "number", name="uq_runs_number"),
    )
    op.create_index("ix_runs_created", "runs", ["created"])
    op.create_index("ix_runs_flow_created", "runs", ["flow", "created"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "events",
        sa.Column("run", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "variables",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("flow", sa.String(200), primary_key=True),
        sa.Column("delivery", sa.String(200), primary_key=True),
        sa.Column("run", sa.String(64)),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("heartbeat", sa.Float, nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "instances", "deliveries", "variables", "secrets", "events", "runs",
                  "schedules", "flow_versions", "flows", "tokens"):
        op.drop_table(table)
