"""PostgreSQL, reached from trio: the only user of asyncpg in the project.

Every public function runs one unit of work in one crossing of the bridge. The modules
``users``, ``subscriptions``, ``payments``, ``outbox`` and ``leases`` hold the units of
work of each table; ``job_kinds`` names the outbox's jobs.
"""

from . import job_kinds, leases, outbox, payments, subscriptions, users
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
    "job_kinds",
    "leases",
    "load_migrations",
    "outbox",
    "payments",
    "pending_migrations",
    "subscriptions",
    "users",
]
