"""The pool and the unit of work: every storage call is one crossing into asyncio."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeAlias, TypeVar

import asyncpg
import trio
from asyncpg.pool import PoolConnectionProxy

from runtime.bridge import run_asyncio
from runtime.failures import DATABASE, InfraError, retry_transient
from runtime.logs import get_logger

T = TypeVar("T")

_log = get_logger("storage")

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Isolation: TypeAlias = Literal["read_committed", "repeatable_read", "serializable"]
Work: TypeAlias = Callable[[Connection], Awaitable[T]]
"""A unit of work: an asyncio coroutine function taking a connection. Only storage modules
write them; the rest of the project calls the trio functions built on them."""


async def fetch_one(conn: Connection, query: str, *args: Any) -> asyncpg.Record:
    """The one row a statement must return (``RETURNING`` after a guarded write, say)."""
    row = await conn.fetchrow(query, *args)
    if row is None:
        raise LookupError(f"expected a row from: {query.split()[0]} ...")
    return row


async def _init_connection(conn: Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class UnitConnection(asyncpg.Connection):
    """The pool's connections: the reset query is skipped after a committed transaction.

    Giving a connection back to asyncpg's pool resets its session (advisory unlock all,
    ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``): one more round trip for every unit of
    work. A unit run by ``transaction`` or ``read`` that committed leaves nothing of that
    behind: cursors close with the transaction, and the storage layer's transaction units
    take no session locks, set nothing beyond ``SET LOCAL`` and listen to nothing (what
    needs a session runs in ``session``, which keeps the reset). A unit that failed or was
    cancelled keeps it too. asyncpg still rolls back an open transaction and drops
    listeners on every release.
    """

    _reset_not_needed = False

    def reset_not_needed(self) -> None:
        self._reset_not_needed = True

    def get_reset_query(self) -> str:
        if self._reset_not_needed:
            self._reset_not_needed = False
            return ""
        return super().get_reset_query()


def _skip_reset(conn: Connection) -> None:
    """Tell ``conn`` (a ``UnitConnection``, through the pool's proxy) that its unit
    committed; any other connection keeps its reset."""
    mark = getattr(conn, "reset_not_needed", None)
    if mark is not None and not conn.is_in_transaction():
        mark()


def _lost(conn: Connection) -> bool:
    """Whether the connection of a running unit is gone.

    When the server side goes away between two queries, asyncpg hands the connection back to
    the pool at once and the unit's next call fails with a bare ``InterfaceError`` ("released
    back to the pool", "the underlying connection is closed"), with nothing in its chain that
    says the connection was lost. Inside a unit, the proxy is only detached that way.
    """
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


async def _on_connection(
    conn: Connection,
    work: Work[T],
    *,
    transaction: bool = True,
    isolation: Isolation | None = None,
    readonly: bool = False,
) -> T:
    """Run ``work`` on ``conn``, in a transaction unless told otherwise, and name a lost
    connection for what it is: a transient infrastructure failure."""
    try:
        if not transaction:
            return await work(conn)
        async with conn.transaction(isolation=isolation, readonly=readonly):
            return await work(conn)
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        # A server's goodbye that arrives between two statements leaves the protocol busy
        # reading it, and the next one fails as "cannot switch to state ...": no bug either.
        if _lost(conn):
            raise InfraError(
                "the database connection was lost during a unit of work", dependency=DATABASE
            ) from exc
        raise
    except asyncpg.ReadOnlySQLTransactionError as exc:
        if readonly:
            # Our own read-only transaction, not a standby after a failover: the unit wrote.
            # That is a bug, and retrying it as a transient failure would only repeat it.
            raise TypeError(
                "a read unit of work tried to write; use Database.transaction for writes"
            ) from exc
        raise


def _unreachable(exc: OSError | asyncpg.TargetServerAttributeNotMatched) -> InfraError:
    """Connecting failed: the server is away (refused, reset, timed out), which passes, or
    its socket is not ours to use (``PermissionError``), which needs an operator.

    A Unix socket that is not there is PostgreSQL's "connection refused": the server is
    stopped or restarting. The stdlib error alone reads as a missing file, which is not
    transient, and would stop retries while the server comes back.

    Every listed host answered but none takes writes (``target_session_attrs=read-write``):
    a failover is under way (the primary is gone, no standby promoted yet), which passes.
    """
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        return InfraError(
            "no database host accepts writes now (a failover under way?)", dependency=DATABASE
        )
    return InfraError(
        f"the database is not accepting connections ({exc})",
        transient=not isinstance(exc, PermissionError),
        dependency=DATABASE,
    )


_CONNECT_ERRORS = (OSError, asyncpg.TargetServerAttributeNotMatched)


async def _run_unit(
    pool: asyncpg.Pool,
    work: Work[T],
    *,
    transaction: bool = True,
    isolation: Isolation | None = None,
    readonly: bool = False,
    stateless: bool = False,
) -> T:
    """One unit of work, on the asyncio side: take a connection, run, give it back.
    ``stateless``: the unit, though outside a transaction, leaves no session state."""
    try:
        conn = await pool.acquire()
    except _CONNECT_ERRORS as exc:
        raise _unreachable(exc) from exc
    try:
        result = await _on_connection(
            conn, work, transaction=transaction, isolation=isolation, readonly=readonly
        )
    except asyncpg.ReadOnlySQLTransactionError:
        # A write reached a server that no longer takes writes (a primary demoted to a
        # standby): every pooled connection to it is stale. Dropping them makes the next
        # units connect again, to the host that is read-write now.
        await pool.expire_connections()
        await _give_back(pool, conn)
        raise
    except BaseException:
        await _give_back(pool, conn)
        raise
    if transaction or stateless:
        _skip_reset(conn)
    await _give_back(pool, conn)
    return result


async def _give_back(pool: asyncpg.Pool, conn: PoolConnectionProxy[asyncpg.Record]) -> None:
    """Return ``conn`` to the pool, which resets it first.

    When the server goes away, the reset can fail after the unit itself finished (its
    commit answered; the server's goodbye arrived after it: asyncpg then reports "cannot
    switch to state 15; another operation (2) is in progress"). The pool terminates such a
    connection and opens a new one when needed; the unit's own outcome stands, and a unit
    that succeeded is not turned into a failure (a bug, as that message would be read).
    """
    try:
        await pool.release(conn)
    except Exception as exc:
        _log.warning(
            "connection dropped: it could not be reset after its unit of work",
            operation="storage.release",
            error=f"{type(exc).__name__}: {exc}",
            outcome="degraded",
        )


async def terminate(closable: asyncpg.Pool | asyncpg.Connection[asyncpg.Record]) -> None:
    """``terminate()`` on asyncio's side, where asyncpg's transports live."""
    closable.terminate()


SESSION_CLOSE_SECONDS = 5.0


async def close_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Close a session from ``Database.open_session``, shielded from cancellation; one that
    does not close within five seconds, or fails to, is terminated."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(SESSION_CLOSE_SECONDS) as scope:
            try:
                await run_asyncio(conn.close)
            except Exception:
                await run_asyncio(terminate, conn)
        if scope.cancelled_caught:
            await run_asyncio(terminate, conn)


class Database:
    """A pool of asyncpg connections, used from trio.

    ``transaction`` and ``read`` run a whole unit of work (an asyncio coroutine function
    taking a connection) in one crossing of the bridge. A trio cancellation cancels the
    asyncio task; asyncpg then rolls back, and the pool resets the connection it returns,
    so no transaction is ever left open. A connection lost during a unit, and a server that
    is not accepting connections (its Unix socket missing included), fail as transient
    ``InfraError``s; the pool reconnects on the next unit.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        close_timeout: float = 10.0,
        dsn: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._close_timeout = close_timeout
        self._dsn = dsn
        self._connect_timeout = connect_timeout

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
        try:
            pool = await run_asyncio(
                asyncpg.create_pool,
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
                connection_class=UnitConnection,
            )
        except _CONNECT_ERRORS as exc:
            raise _unreachable(exc) from exc
        return cls(pool, dsn=dsn, connect_timeout=connect_timeout)

    async def open_session(
        self, *, server_settings: dict[str, str] | None = None
    ) -> asyncpg.Connection[asyncpg.Record]:
        """A connection of its own, outside the pool, for what must live as long as a
        session (a session advisory lock). The caller closes it; its calls cross the
        bridge one by one, so keep them few."""
        if self._dsn is None:
            raise RuntimeError("this Database was not opened with Database.connect")
        try:
            conn: asyncpg.Connection[asyncpg.Record] = await run_asyncio(
                asyncpg.connect,
                self._dsn,
                timeout=self._connect_timeout,
                server_settings=server_settings,
            )
        except _CONNECT_ERRORS as exc:
            raise _unreachable(exc) from exc
        return conn

    async def transaction(
        self, work: Work[T], *, retry: bool = False, isolation: Isolation = "read_committed"
    ) -> T:
        """Run ``work`` inside one transaction. ``retry`` only for work safe to repeat."""

        if not retry:
            return await run_asyncio(_run_unit, self._pool, work, isolation=isolation)
        async for attempt in retry_transient(operation="storage.transaction"):
            with attempt:
                return await run_asyncio(_run_unit, self._pool, work, isolation=isolation)
        raise AssertionError("unreachable: retry_transient raises when it gives up")

    async def read(self, work: Work[T], *, retry: bool = True) -> T:
        """Run a read-only ``work``; reads are safe to repeat, so they retry by default."""

        if not retry:
            return await run_asyncio(_run_unit, self._pool, work, readonly=True)
        async for attempt in retry_transient(operation="storage.read"):
            with attempt:
                return await run_asyncio(_run_unit, self._pool, work, readonly=True)
        raise AssertionError("unreachable: retry_transient raises when it gives up")

    async def statement(self, work: Work[T], *, retry: bool = False) -> T:
        """Run ``work``, which issues exactly one statement: PostgreSQL commits a lone
        statement by itself, atomically, so ``BEGIN``/``COMMIT`` around it would only add
        two round trips. It is committed when this returns, and like a transaction unit it
        leaves no session state (no session ``SET``, lock or ``LISTEN``). ``retry`` only for
        a statement safe to repeat."""

        if not retry:
            return await run_asyncio(_run_unit, self._pool, work, transaction=False, stateless=True)
        async for attempt in retry_transient(operation="storage.statement"):
            with attempt:
                return await run_asyncio(
                    _run_unit, self._pool, work, transaction=False, stateless=True
                )
        raise AssertionError("unreachable: retry_transient raises when it gives up")

    async def session(self, work: Work[T]) -> T:
        """Run ``work`` on one connection with no transaction around it (it manages its own)."""

        return await run_asyncio(_run_unit, self._pool, work, transaction=False)

    async def ping(self) -> None:
        async def unit(conn: Connection) -> None:
            await conn.fetchval("select 1")

        await run_asyncio(_run_unit, self._pool, unit, transaction=False)

    async def close(self) -> None:
        """Close gracefully; terminate the connections that do not close in time."""
        with trio.move_on_after(self._close_timeout) as scope:
            await run_asyncio(self._pool.close)
        if scope.cancelled_caught:
            await run_asyncio(terminate, self._pool)

    @property
    def pool_size(self) -> dict[str, Any]:
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}
