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


# Durability a test server does not need: its data dies with the test run. Without it a test
# database is created faster, and the server stops without flushing every database created
# during the run (seconds on a slow disk).
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class TestPostgres:
    """Owns the server of a test run and hands out migrated databases."""

    __test__ = False  # not a pytest test class

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedPostgres(data_dir)
        self._names = itertools.count(1)
        # One admin connection for the whole run, on an asyncio loop of its own: cheaper
        # than a loop and a connection per test database.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admin: asyncpg.Connection[asyncpg.Record] | None = None

    def start(self) -> None:
        self.server.start_blocking()
        self._loop = asyncio.new_event_loop()
        self._admin = self._loop.run_until_complete(asyncpg.connect(self.server.dsn()))
        settings = [f"alter system set {name} = {value}" for name, value in _FAST_SETTINGS.items()]
        self._execute(
            *settings,
            "select pg_reload_conf()",
            f"drop database if exists {TEMPLATE}",
            f"create database {TEMPLATE}",
        )
        trio.run(self._migrate_template)

    def stop(self) -> None:
        try:
            if self._loop is not None:
                if self._admin is not None:
                    self._loop.run_until_complete(self._admin.close())
                self._loop.close()
        finally:
            self._admin = self._loop = None
            self.server.stop_blocking()

    async def _migrate_template(self) -> None:
        async with asyncio_loop():
            db = await Database.connect(self.server.dsn(TEMPLATE), min_size=0)
            try:
                await apply_migrations(db)
            finally:
                await db.close()

    def _execute(self, *statements: str) -> None:
        """Run admin statements; from plain (synchronous) code only, not inside trio."""
        if self._loop is None or self._admin is None:
            raise RuntimeError("the test server is not running")
        admin = self._admin

        async def run() -> None:
            for statement in statements:
                await admin.execute(statement)

        self._loop.run_until_complete(run())

    def new_database(self, *, migrated: bool = True) -> str:
        """Create a fresh database and return its DSN."""
        name = f"test_{next(self._names)}"
        source = f" template {TEMPLATE}" if migrated else ""
        self._execute(f"drop database if exists {name}", f"create database {name}{source}")
        return self.server.dsn(name)
