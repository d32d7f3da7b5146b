"""The pool and the unit of work: every storage call is one crossing into asyncio."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias, TypeVar

import asyncpg
import trio
from asyncpg.pool import PoolConnectionProxy

from runtime.bridge import run_asyncio
from runtime.failures import retry_transient

T = TypeVar("T")

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Isolation: TypeAlias = Literal["read_committed", "repeatable_read", "serializable"]
Work: TypeAlias = Callable[[Connection], Awaitable[T]]
"""A unit of work: an asyncio coroutine function taking a connection. Only storage modules
write them; the rest of the project calls the trio functions built on them."""


async def _init_connection(conn: Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """A pool of asyncpg connections, used from trio.

    ``transaction`` and ``read`` run a whole unit of work (an asyncio coroutine function
    taking a connection) in one crossing of the bridge. A trio cancellation cancels the
    asyncio task; asyncpg then rolls back, and the pool resets the connection it returns,
    so no transaction is ever left open.
    """

    def __init__(self, pool: asyncpg.Pool, *, close_timeout: float = 10.0) -> None:
        self._pool = pool
        self._close_timeout = close_timeout

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
    ) -> Database:
        pool = await run_asyncio(
            asyncpg.create_pool,
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
            init=_init_connection,
        )
        return cls(pool)

    async def transaction(
        self, work: Work[T], *, retry: bool = False, isolation: Isolation = "read_committed"
    ) -> T:
        """Run ``work`` inside one transaction. ``retry`` only for work safe to repeat."""

        async def unit() -> T:
            async with self._pool.acquire() as conn, conn.transaction(isolation=isolation):
                return await work(conn)

        if not retry:
            return await run_asyncio(unit)
        async for attempt in retry_transient(operation="storage.transaction"):
            with attempt:
                return await run_asyncio(unit)
        raise AssertionError("unreachable: retry_transient raises when it gives up")

    async def read(self, work: Work[T], *, retry: bool = True) -> T:
        """Run a read-only ``work``; reads are safe to repeat, so they retry by default."""

        async def unit() -> T:
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                return await work(conn)

        if not retry:
            return await run_asyncio(unit)
        async for attempt in retry_transient(operation="storage.read"):
            with attempt:
                return await run_asyncio(unit)
        raise AssertionError("unreachable: retry_transient raises when it gives up")

    async def session(self, work: Work[T]) -> T:
        """Run ``work`` on one connection with no transaction around it (it manages its own)."""

        async def unit() -> T:
            async with self._pool.acquire() as conn:
                return await work(conn)

        return await run_asyncio(unit)

    async def ping(self) -> None:
        async def unit() -> None:
            async with self._pool.acquire() as conn:
                await conn.fetchval("select 1")

        await run_asyncio(unit)

    async def close(self) -> None:
        """Close gracefully; terminate the connections that do not close in time."""
        with trio.move_on_after(self._close_timeout) as scope:
            await run_asyncio(self._pool.close)
        if scope.cancelled_caught:
            self._pool.terminate()

    @property
    def pool_size(self) -> dict[str, Any]:
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}
