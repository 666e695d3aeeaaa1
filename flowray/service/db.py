"""The service's database: connecting (SQLite in the data dir, or PostgreSQL), migrating on
start, and telling a database that went away from a bug.

SQLite runs in WAL mode with a busy timeout, so that the API reads while runs write their
events. PostgreSQL is reached through psycopg 3; ``postgresql://`` URLs are taken as they are
written elsewhere and given the driver here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")

# One PostgreSQL advisory lock key for "migrating flowray's schema" (any 64-bit number).
_MIGRATE_LOCK = 0x666C6F77726179


class DatabaseError(Exception):
    """A database URL that cannot be used, or a migration that failed (the message says
    which and why, without the URL's password)."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is not answering (down, restarting, unreachable,
    locked for too long), as opposed to a bug in a query: the API answers 503 for these."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def database_url(db: str | None, data_dir: str) -> str:
    """The SQLAlchemy URL of ``--db`` (default: SQLite in ``data_dir``)."""
    if not db:
        return "sqlite:///" + os.path.join(data_dir, "flowray.db")
    try:
        url = make_url(db)
    except ArgumentError:
        raise DatabaseError(f"--db {shown_url(db)!r} is not a database URL (use "
                            "postgresql://USER@HOST:PORT/NAME or sqlite:///PATH)") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    elif url.drivername not in ("sqlite", "postgresql+psycopg"):
        raise DatabaseError(f"--db: the database {url.drivername!r} is not supported "
                            "(PostgreSQL or SQLite)")
    return url.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a URL>"


def connect(url: str) -> Engine:
    """An engine for ``url``; SQLite in WAL mode with foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=8, max_overflow=16)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pre_ping: a database that restarted gives fresh connections, not stale ones
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"connect_timeout": 5})


@contextlib.contextmanager
def _migration_lock(conn: Connection, url: str) -> Iterator[None]:
    """Two service processes starting at once migrate one after the other."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATE_LOCK})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATE_LOCK})
        return
    path = make_url(url).database
    if not path or path == ":memory:":
        yield
        return
    with open(path + ".migrate-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest version (Alembic); returns that version."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    url = engine.url.render_as_string(hide_password=False)
    try:
        with engine.connect() as conn, _migration_lock(conn, url):
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
            version = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot migrate the database at {shown_url(url)}: "
                            f"{first_line(exc)}") from None
    return version or ""


def first_line(exc: BaseException) -> str:
    """The first line of a database error (without SQLAlchemy's background link)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
