"""The service's database tables (SQLAlchemy Core), as the newest migration leaves them.

Migrations in ``flowray/service/migrations`` make these tables; ``tests/test_service_db.py``
checks that migrating an empty database gives exactly what is declared here. Times are Unix
seconds (floats): the same on SQLite and PostgreSQL, and what the API returns.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# API tokens: only a SHA-256 of each token is kept; the token itself is shown once.
tokens = Table(
    "tokens", metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
)

# Web page sign-ins: only SHA-256 hashes of each session id (the page's cookie) and of its
# CSRF value are kept, with the hash of the token it was opened with, so that revoking the
# token ends its sessions.
sessions = Table(
    "sessions", metadata,
    Column("hash", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, index=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=False),
)

# A flow's name and its newest version; a removed flow is kept (deleted=true) so that its runs'
# history still names it and a new push goes on counting versions.
flows = Table(
    "flows", metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("last_number", Integer, nullable=False, default=0),  # run numbers, per flow
)

# Each pushed version: the YAML as written and the files of the local actions it uses.
flow_versions = Table(
    "flow_versions", metadata,
    Column("flow", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("path", String(300), nullable=False),  # the file name it was pushed as
    Column("text", Text, nullable=False),
    Column("files", Text, nullable=False),  # JSON: relative path -> base64 content
    Column("executable", Text, nullable=False),  # JSON: the paths of files to run (mode 755)
    Column("triggers", Text, nullable=False),  # JSON: the trigger kinds, for listings
    Column("flow_triggers", Text, nullable=False),  # JSON: [[flow, [statuses]]]
    Column("created", Float, nullable=False),
)

# One row per schedule of a flow's current version. A fire is claimed by moving next_fire on
# with a compare-and-set, so that two service processes on one database start one run.
schedules = Table(
    "schedules", metadata,
    Column("flow", String(200), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("timezone", String(100), nullable=False),
    Column("catchup", Float, nullable=False),
    Column("next_fire", Float, nullable=False),
)
Index("ix_schedules_next_fire", schedules.c.next_fire)

runs = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("inputs", Text, nullable=False),  # JSON
    Column("event", Text, nullable=False),  # JSON: the event context
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("idempotency_key", String(200)),
    Column("group_name", String(400)),  # the concurrency group, evaluated at trigger time
    Column("group_max", Integer, nullable=False, default=1),
    Column("owner", String(64)),  # the service process running it
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("rerun_of", String(64)),
    Column("reuse", Text),  # JSON: what a rerun takes from the run it reruns
    Column("record", Text),  # JSON: the final record, kept when the run ended
    UniqueConstraint("flow", "idempotency_key", name="uq_runs_idempotency"),
    UniqueConstraint("flow", "number", name="uq_runs_number"),
)
Index("ix_runs_created", runs.c.created)
Index("ix_runs_flow_created", runs.c.flow, runs.c.created)
Index("ix_runs_status", runs.c.status)

# Every event of every run, as SPEC "Events" gives them (JSON), in order.
events = Table(
    "events", metadata,
    Column("run", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("data", Text, nullable=False),
)

secrets = Table(
    "secrets", metadata,
    Column("name", String(200), primary_key=True),
    Column("blob", LargeBinary, nullable=False),  # SecretBox.seal: never the value in clear
    Column("key_id", String(32), nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

variables = Table(
    "variables", metadata,
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

# Webhook deliveries seen, by their delivery id: the same delivery twice starts one run.
deliveries = Table(
    "deliveries", metadata,
    Column("flow", String(200), primary_key=True),
    Column("delivery", String(200), primary_key=True),
    Column("run", String(64)),
    Column("created", Float, nullable=False),
)

# Service processes alive on this database (a heartbeat), so that a restarted one knows which
# runs lost their process.
instances = Table(
    "instances", metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("heartbeat", Float, nullable=False),
)

# Small facts: the secret key's canary.
meta = Table(
    "meta", metadata,
    Column("key", String(100), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)
