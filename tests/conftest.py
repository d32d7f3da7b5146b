"""The real PostgreSQL of the tests: the same fixtures plugin authors import."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.logs import reset_logging
from runtime.testing.fixtures import database_dsn, db, postgres

__all__ = ["database_dsn", "db", "postgres"]


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever the one before configured (a
    command run in-process sets the level to critical, say): tests that capture log lines
    must not depend on the order the tests run in."""
    yield
    reset_logging()
