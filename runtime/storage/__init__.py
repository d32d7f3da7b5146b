"""PostgreSQL, reached from trio: the only user of asyncpg in the project.

Every public function runs one unit of work in one crossing of the bridge. The modules
``users``, ``subscriptions``, ``payments``, ``outbox`` and ``leases`` hold the units of
work of each table; ``job_kinds`` names the outbox's jobs.

Names and modules are imported on first use: a start reaches ``EmbeddedPostgres`` (to
start the server while the rest is imported) without importing asyncpg and the bridge.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from . import backlog, job_kinds, leases, outbox, payments, subscriptions, users
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
    "backlog",
    "job_kinds",
    "leases",
    "load_migrations",
    "outbox",
    "payments",
    "pending_migrations",
    "subscriptions",
    "users",
]

_LAZY = {
    "Connection": "._database",
    "Database": "._database",
    "Work": "._database",
    "EmbeddedPostgres": "._embedded",
    "Migration": "._migrations",
    "MigrationError": "._migrations",
    "apply_migrations": "._migrations",
    "load_migrations": "._migrations",
    "pending_migrations": "._migrations",
}
_MODULES = frozenset(
    {"backlog", "job_kinds", "leases", "outbox", "payments", "subscriptions", "users"}
)


_exported = lazy_exports(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    return _exported(name)
