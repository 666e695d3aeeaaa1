"""The service's schema: migrating an empty database (real SQLite, real PostgreSQL) gives
exactly the tables flowray/service/tables.py declares, and migrating again changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flowray.service.db import connect, database_url, migrate
from flowray.service.tables import metadata

if TYPE_CHECKING:
    from pgfixture import PostgresCluster

pytest_plugins = ["pgfixture"]


def _differences(url: str) -> list[object]:
    engine = connect(url)
    try:
        assert migrate(engine) == "0002"
        assert migrate(engine) == "0002"  # again: nothing to do
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_the_migrations_make_the_declared_tables_on_sqlite(tmp_path: Path) -> None:
    assert _differences(database_url(None, str(tmp_path))) == []


def test_the_migrations_make_the_declared_tables_on_postgresql(
        postgres: PostgresCluster) -> None:
    assert _differences(postgres.url) == []
