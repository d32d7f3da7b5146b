"""The real PostgreSQL of the tests: the same fixtures plugin authors import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


_PROCESS_LEVEL = (Path(__file__).parent / "integration", Path(__file__).parent / "e2e")


def _runs_processes(item: pytest.Item) -> bool:
    return any(item.path.is_relative_to(folder) for folder in _PROCESS_LEVEL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files that run whole processes first (up to a minute each, mostly waiting), the
    quick ones after: test processes take files as they finish the last, so the quick
    files fill the gaps instead of one long file running alone at the end. The order
    within a file is kept."""
    items.sort(key=lambda item: not _runs_processes(item))
