"""pytest fixtures for a real PostgreSQL, for the project's tests and plugin authors' alike.

``postgres`` (one embedded server per run), ``database_dsn`` and ``db`` (a fresh migrated
database per test, and a ``Database`` connected to it; needs pytest-trio's
``trio_mode = true``). Import them into a ``conftest.py``::

    from runtime.testing.fixtures import database_dsn, db, postgres
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime.bridge import asyncio_loop
from runtime.storage import Database

from .postgres import TestPostgres

__all__ = ["database_dsn", "db", "postgres"]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPostgres]:
    """One server per run. Its data lives in memory (/dev/shm) where there is one: each
    test database is a copy of the template, and copying on disk is most of its cost."""
    shm = Path("/dev/shm")
    if shm.is_dir():
        root = Path(tempfile.mkdtemp(prefix="vpnbot-pg-", dir=shm))
    else:
        root = tmp_path_factory.mktemp("pg")
    server = TestPostgres(root / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if root.parent == shm:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_dsn(postgres: TestPostgres) -> str:
    """A fresh, migrated database for one test."""
    return postgres.new_database()


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[Database]:
    async with asyncio_loop():
        database = await Database.connect(database_dsn, min_size=0, max_size=8)
        try:
            yield database
        finally:
            await database.close()
