"""A real PostgreSQL for tests: one embedded server per run, a fresh database per test.

Fresh databases are copies of a migrated template (``CREATE DATABASE ... TEMPLATE``), which
takes tens of milliseconds instead of re-running every migration.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import asyncpg
import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database, EmbeddedPostgres, apply_migrations

TEMPLATE = "vpnbot_template"


class TestPostgres:
    """Owns the server of a test run and hands out migrated databases."""

    __test__ = False  # not a pytest test class

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedPostgres(data_dir)
        self._names = itertools.count(1)

    def start(self) -> None:
        self.server.start_blocking()
        asyncio.run(
            self._admin(f"drop database if exists {TEMPLATE}", f"create database {TEMPLATE}")
        )
        trio.run(self._migrate_template)

    def stop(self) -> None:
        self.server.stop_blocking()

    async def _migrate_template(self) -> None:
        async with asyncio_loop():
            db = await Database.connect(self.server.dsn(TEMPLATE), min_size=0)
            try:
                await apply_migrations(db)
            finally:
                await db.close()

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.server.dsn())
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def new_database(self, *, migrated: bool = True) -> str:
        """Create a fresh database and return its DSN."""
        name = f"test_{next(self._names)}"
        source = f" template {TEMPLATE}" if migrated else ""
        asyncio.run(
            self._admin(f"drop database if exists {name}", f"create database {name}{source}")
        )
        return self.server.dsn(name)
