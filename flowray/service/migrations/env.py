"""Alembic's entry point: migrate the database whose connection ``flowray.service.db`` hands
over in ``config.attributes["connection"]`` (there is no alembic.ini: the service runs the
migrations itself on start)."""

from __future__ import annotations

from alembic import context

from flowray.service.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
