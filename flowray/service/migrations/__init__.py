"""Alembic migrations of the service's database; ``flowray.service.db`` runs them on start."""
