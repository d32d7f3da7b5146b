"""The real PostgreSQL of the tests: the same fixtures plugin authors import."""

from __future__ import annotations

from runtime.testing.fixtures import database_dsn, db, postgres

__all__ = ["database_dsn", "db", "postgres"]
