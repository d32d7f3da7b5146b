"""Units of one statement: PostgreSQL commits a lone statement by itself, atomically, so
wrapping it in ``BEGIN``/``COMMIT`` only adds two round trips. Units of several statements
keep ``Database.transaction``."""

from __future__ import annotations

from typing import TypeVar

from runtime.failures import retry_transient

from ._database import Database, Work

T = TypeVar("T")


async def single_statement(db: Database, work: Work[T], *, retry: bool = False) -> T:
    """Run ``work``, which must issue exactly one statement, committed when it returns.
    ``retry`` only for a statement safe to repeat."""
    if not retry:
        return await db.session(work)
    async for attempt in retry_transient(operation="storage.statement"):
        with attempt:
            return await db.session(work)
    raise AssertionError("unreachable: retry_transient raises when it gives up")
