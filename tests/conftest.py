from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from runtime.bridge import asyncio_loop
from runtime.storage import Database
from runtime.testing.postgres import TestPostgres


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPostgres]:
    server = TestPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    yield server
    server.stop()


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
