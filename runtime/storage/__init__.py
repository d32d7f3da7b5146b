"""PostgreSQL, reached from trio: the only user of asyncpg in the project.

Every public function runs one unit of work in one crossing of the bridge.
"""

from ._database import Connection, Database, Work
from ._embedded import EmbeddedPostgres
from ._migrations import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
    pending_migrations,
)

__all__ = [
    "Connection",
    "Database",
    "EmbeddedPostgres",
    "Migration",
    "MigrationError",
    "Work",
    "apply_migrations",
    "load_migrations",
    "pending_migrations",
]
