"""The unit of work against a real PostgreSQL: cancellation, lost connections, retries."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import stamina
import trio

from runtime.bridge import asyncio_loop, call_trio_soon, run_asyncio
from runtime.failures import DATABASE, DomainError, FailureType, classify
from runtime.storage import Connection, Database, Work

PROMPTLY = 1.0
"""Seconds within which a cancelled or failed unit must be back (the units sleep 5)."""


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without sleeping between attempts, attempts left as the code asks.

    trio's ``autojump_clock`` does not help here: trio-asyncio's loop runs on trio's clock,
    so while trio waits for the database the clock jumps to asyncpg's own timeouts and every
    query "times out" at once.
    """
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
async def small_db(database_dsn: str) -> AsyncIterator[Database]:
    """A pool of one connection, to exhaust it on purpose."""
    async with asyncio_loop():
        database = await Database.connect(database_dsn, min_size=0, max_size=1)
        try:
            yield database
        finally:
            await database.close()


async def _count(db: Database, sql: str, *args: object) -> int:
    async def unit(conn: Connection) -> int:
        return int(await conn.fetchval(sql, *args))

    return await db.read(unit, retry=False)


async def _users(db: Database) -> int:
    return await _count(db, "select count(*) from users")


async def _open_transactions(db: Database) -> int:
    """Server connections of this database, other than ours, left inside a transaction or
    still running a query of a unit that is over."""
    return await _count(
        db,
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid()"
        " and (state like 'idle in transaction%'"
        " or (state = 'active' and query like '%pg_sleep%'))",
    )


async def _sleeping_backend(db: Database) -> int:
    """The pid of the backend running ``pg_sleep`` in this database, once there is one."""
    with trio.fail_after(60):
        while True:
            pid = await _count(
                db,
                "select coalesce(max(pid), 0) from pg_stat_activity"
                " where datname = current_database() and pid <> pg_backend_pid()"
                " and state = 'active' and query like '%pg_sleep%'",
            )
            if pid:
                return pid
            await trio.sleep(0.005)


class _WriteThenSleep:
    """A unit that writes a row, then sleeps 5 s on the server; records how far it got."""

    def __init__(self) -> None:
        self.sleeping = False

    async def __call__(self, conn: Connection) -> None:
        await conn.execute("insert into users (telegram_id) values (1)")
        self.sleeping = True
        await conn.execute("select pg_sleep(5)")


async def _write_then_sleep(conn: Connection) -> None:
    await _WriteThenSleep()(conn)


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["move_on_after", "fail_after"])
async def test_a_cancelled_transaction_rolls_back_and_leaves_nothing_open(
    db: Database, scope: str
) -> None:
    unit = _WriteThenSleep()
    start = trio.current_time()
    if scope == "move_on_after":
        with trio.move_on_after(0.1) as cancel_scope:
            await db.transaction(unit)
        assert cancel_scope.cancelled_caught
    else:
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.1):
                await db.transaction(unit)
    assert trio.current_time() - start < PROMPTLY
    assert unit.sleeping  # the row was written before the cancellation

    assert await _users(db) == 0
    assert await _open_transactions(db) == 0
    assert await db.transaction(_count_users_in) == 0


async def _count_users_in(conn: Connection) -> int:
    return int(await conn.fetchval("select count(*) from users"))


async def test_a_cancelled_session_leaves_no_transaction_open(db: Database) -> None:
    sleeper = _WriteThenSleep()

    async def unit(conn: Connection) -> None:
        async with conn.transaction():
            await sleeper(conn)

    with trio.move_on_after(0.1):
        await db.session(unit)
    assert sleeper.sleeping
    assert await _users(db) == 0
    assert await _open_transactions(db) == 0


async def test_the_connection_of_a_cancelled_unit_is_reused_cleanly(small_db: Database) -> None:
    """With one connection in the pool, the next unit gets the very connection cancelled."""
    sleeper = _WriteThenSleep()
    with trio.move_on_after(0.1):
        await small_db.transaction(sleeper)
    assert sleeper.sleeping

    async def unit(conn: Connection) -> tuple[bool, int]:
        in_transaction = conn.is_in_transaction()
        await conn.execute("insert into users (telegram_id) values (2)")
        return in_transaction, int(await conn.fetchval("select count(*) from users"))

    with trio.fail_after(PROMPTLY):
        assert await small_db.session(unit) == (False, 1)
    assert small_db.pool_size["size"] == 1
    assert await _open_transactions(small_db) == 0


async def test_cancelling_a_wait_for_an_exhausted_pool(small_db: Database) -> None:
    release = asyncio.Event()
    held = trio.Event()

    async def hold(conn: Connection) -> None:
        await conn.execute("insert into users (telegram_id) values (1)")
        call_trio_soon(held.set)  # a trio Event is set on trio's side
        await release.wait()

    async def set_release() -> None:
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(small_db.transaction, hold)
        await held.wait()

        start = trio.current_time()
        with trio.move_on_after(0.05) as waiting:
            await small_db.transaction(_count_users_in)
        assert waiting.cancelled_caught
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.05):
                await small_db.read(_count_users_in)
        assert trio.current_time() - start < PROMPTLY

        await run_asyncio(set_release)

    # The holder committed; the cancelled waiters did not take the only connection away.
    with trio.fail_after(PROMPTLY):
        assert await _users(small_db) == 1
        assert await small_db.transaction(_count_users_in) == 1
    assert small_db.pool_size["size"] == 1
    assert await _open_transactions(small_db) == 0


# -- a lost connection ----------------------------------------------------------------------


async def test_a_backend_terminated_mid_transaction(db: Database) -> None:
    failures: list[BaseException] = []

    async def victim() -> None:
        try:
            await db.transaction(_write_then_sleep)
        except Exception as exc:
            failures.append(exc)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(victim)
        pid = await _sleeping_backend(db)
        assert await _count(db, "select pg_terminate_backend($1)::int", pid) == 1
    assert trio.current_time() - start < PROMPTLY

    [error] = failures
    failure = classify(error)
    assert failure.type is FailureType.INFRA
    assert failure.transient
    assert asyncpg.exceptions.ConnectionDoesNotExistError in _chain_types(error)
    assert await _users(db) == 0
    assert await db.transaction(_count_users_in) == 0


def _chain_types(exc: BaseException | None) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    while exc is not None and len(found) < 20:
        found.append(type(exc))
        exc = exc.__cause__ or exc.__context__
    return found


async def _terminate(dsn: str, pid: int) -> None:
    """Kill backend ``pid`` from a connection of its own (runs on the asyncio side)."""
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("select pg_terminate_backend($1)", pid)
    finally:
        await other.close()


async def test_a_retried_transaction_survives_a_lost_connection(
    db: Database, database_dsn: str, no_backoff: None
) -> None:
    attempts = 0

    async def unit(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        await conn.execute("insert into users (telegram_id) values (1)")
        if attempts == 1:
            await _terminate(database_dsn, conn.get_server_pid())
        return int(await conn.fetchval("select count(*) from users"))

    assert await db.transaction(unit, retry=True) == 1
    assert attempts == 2
    assert await _users(db) == 1


async def test_a_connection_lost_between_statements_is_the_databases_failure(
    db: Database, database_dsn: str
) -> None:
    """However asyncpg words it (the connection does not exist, is closed, or its protocol
    is still reading the server's goodbye), it is the database away, never a bug."""

    killer = await run_asyncio(asyncpg.connect, database_dsn)

    async def unit(conn: Connection) -> None:
        await killer.execute("select pg_terminate_backend($1)", conn.get_server_pid())
        await conn.execute("select 1")

    try:
        for _ in range(40):  # the goodbye races the next statement
            for run in (db.session, db.transaction):
                with pytest.raises(Exception) as raised:
                    await run(unit)
                failure = classify(raised.value)
                assert (failure.type, failure.transient, failure.dependency) == (
                    FailureType.INFRA,
                    True,
                    DATABASE,
                ), failure
    finally:
        await run_asyncio(killer.close)


async def test_a_unit_that_finished_is_not_failed_by_its_connection_dying_after(
    db: Database, database_dsn: str
) -> None:
    """The server goes away right after a unit's last statement: giving the connection back
    then fails (asyncpg's reset meets the server's goodbye), but the unit is done, and its
    result stands; it is not a failure, let alone a bug."""

    async def unit(conn: Connection) -> str:
        await conn.execute("insert into users (telegram_id) select count(*) + 1 from users")
        await _terminate(database_dsn, conn.get_server_pid())
        return "done"

    for _ in range(10):  # the goodbye races the reset; either way the unit stands
        assert await db.session(unit) == "done"
    assert await _users(db) == 10


async def test_a_lost_connection_is_not_retried_unless_asked(
    db: Database, database_dsn: str, no_backoff: None
) -> None:
    attempts = 0

    async def unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("insert into users (telegram_id) values (1)")
        await _terminate(database_dsn, conn.get_server_pid())
        await conn.execute("select 1")

    with pytest.raises(Exception) as raised:
        await db.transaction(unit)
    assert classify(raised.value).type is FailureType.INFRA
    assert attempts == 1
    assert await _users(db) == 0


async def test_a_read_retries_by_default(db: Database, database_dsn: str, no_backoff: None) -> None:
    attempts = 0

    async def unit(conn: Connection) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await _terminate(database_dsn, conn.get_server_pid())
        return int(await conn.fetchval("select 7"))

    assert await db.read(unit) == 7
    assert attempts == 2


async def test_retries_give_up_after_the_last_attempt(
    db: Database, database_dsn: str, no_backoff: None
) -> None:
    attempts = 0

    async def unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await _terminate(database_dsn, conn.get_server_pid())
        await conn.execute("select 1")

    with pytest.raises(Exception) as raised:
        await db.transaction(unit, retry=True)
    assert classify(raised.value).transient
    assert attempts == 3  # retry_transient's default
    assert await db.transaction(_count_users_in) == 0


async def test_a_unique_violation_is_not_retried(db: Database, no_backoff: None) -> None:
    attempts = 0

    async def unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("insert into users (telegram_id) values (1)")
        await conn.execute("insert into users (telegram_id) values (1)")

    with pytest.raises(asyncpg.UniqueViolationError):
        await db.transaction(unit, retry=True)
    assert attempts == 1
    assert await _users(db) == 0


async def test_a_domain_error_is_not_retried_and_rolls_back(db: Database, no_backoff: None) -> None:
    attempts = 0

    async def unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("insert into users (telegram_id) values (1)")
        raise DomainError("not enough balance")

    async def read_unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.fetchval("select count(*) from users")
        raise DomainError("no such plan")

    with pytest.raises(DomainError, match="not enough balance"):
        await db.transaction(unit, retry=True)
    assert attempts == 1
    assert await _users(db) == 0
    with pytest.raises(DomainError, match="no such plan"):
        await db.read(read_unit)
    assert attempts == 2


async def test_a_read_that_writes_is_a_bug_not_a_failover(db: Database, no_backoff: None) -> None:
    """asyncpg reports a write in a read-only transaction as it reports a standby; in ``read``
    the transaction is read-only by our choice, so a retry would only repeat the bug."""
    attempts = 0

    async def unit(conn: Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("insert into users (telegram_id) values (1)")

    with pytest.raises(TypeError, match="tried to write") as raised:
        await db.read(unit)
    assert attempts == 1
    assert classify(raised.value).type is FailureType.BUG
    assert isinstance(raised.value.__cause__, asyncpg.ReadOnlySQLTransactionError)
    assert await _users(db) == 0


async def test_a_serialization_failure_is_retried(db: Database, no_backoff: None) -> None:
    """Two serializable transactions each read what the other writes: one loses, is retried."""
    both_read = asyncio.Event()
    readers = 0
    attempts = {1: 0, 2: 0}

    def unit_for(user: int) -> Work[None]:
        async def unit(conn: Connection) -> None:
            nonlocal readers
            attempts[user] += 1
            await conn.fetchval("select count(*) from users")
            if attempts[user] == 1:
                readers += 1
                if readers == 2:
                    both_read.set()
                await both_read.wait()
            await conn.execute("insert into users (telegram_id) values ($1)", user)

        return unit

    async def run(user: int) -> None:
        await db.transaction(unit_for(user), retry=True, isolation="serializable")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 1)
        nursery.start_soon(run, 2)
    assert await _users(db) == 2
    assert sorted(attempts.values()) == [1, 2]


async def test_close_does_not_wait_forever_for_a_running_unit(database_dsn: str) -> None:
    failures: list[BaseException] = []

    async with asyncio_loop():
        db = await Database.connect(database_dsn, min_size=0, max_size=2)
        db._close_timeout = 0.05

        async def victim() -> None:
            try:
                await db.transaction(_write_then_sleep)
            except Exception as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(victim)
            await _sleeping_backend(db)
            start = trio.current_time()
            await db.close()
            assert trio.current_time() - start < PROMPTLY
    [error] = failures
    assert classify(error).type is FailureType.INFRA


# -- giving connections back ----------------------------------------------------------------


async def _leave_session_state(conn: Connection, name: str) -> None:
    """What transaction units must not do: change their session (a setting that outlives
    the commit, an advisory lock that outlives even a rollback). The pool's reset undoes both."""
    await conn.execute(f"set application_name = '{name}'")
    await conn.execute("select pg_advisory_lock(4242)")


async def _session_state(db: Database) -> tuple[str, int]:
    async def unit(conn: Connection) -> tuple[str, int]:
        locks = await conn.fetchval(
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        )
        return str(await conn.fetchval("show application_name")), int(locks)

    return await db.session(unit)


async def test_a_committed_transaction_gives_its_connection_back_without_a_reset(
    small_db: Database,
) -> None:
    async def unit(conn: Connection) -> None:
        await _leave_session_state(conn, "left behind")

    await small_db.transaction(unit)
    # One connection in the pool: the next unit gets the same session, not reset.
    assert await _session_state(small_db) == ("left behind", 1)
    assert await _session_state(small_db) == ("", 0)  # a session unit's release resets it


async def test_a_statement_gives_its_connection_back_without_a_reset(
    small_db: Database,
) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute("select set_config('application_name', 'by a statement', false)")

    await small_db.statement(unit)
    assert (await _session_state(small_db))[0] == "by a statement"
    assert await _session_state(small_db) == ("", 0)

    async def failing(conn: Connection) -> None:
        await conn.execute("select set_config('application_name', 'failed', false)")
        raise DomainError("changed my mind")

    with pytest.raises(DomainError):
        await small_db.statement(failing)
    assert await _session_state(small_db) == ("", 0)


async def test_every_other_unit_gives_its_connection_back_reset(small_db: Database) -> None:
    async def session_unit(conn: Connection) -> None:
        await _leave_session_state(conn, "by a session")

    await small_db.session(session_unit)
    assert await _session_state(small_db) == ("", 0)

    async def failing_unit(conn: Connection) -> None:
        await _leave_session_state(conn, "by a failed unit")
        raise DomainError("changed my mind")

    with pytest.raises(DomainError):
        await small_db.transaction(failing_unit)
    assert await _session_state(small_db) == ("", 0)

    state_left = trio.Event()

    async def cancelled_unit(conn: Connection) -> None:
        await _leave_session_state(conn, "by a cancelled unit")
        call_trio_soon(state_left.set)
        await conn.execute("select pg_sleep(5)")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(small_db.transaction, cancelled_unit)
        await state_left.wait()
        nursery.cancel_scope.cancel()
    with trio.fail_after(PROMPTLY * 5):
        assert await _session_state(small_db) == ("", 0)
    assert small_db.pool_size["size"] == 1


async def test_a_session_that_cannot_connect_names_the_database(db: Database) -> None:
    """A refused connection is the database away, as for the pool: the wake-up listener's
    reconnect attempts during an outage keep blaming the database, so the outage stays one
    cause and one alert."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    away = Database(
        db._pool, dsn=f"postgresql://nobody@127.0.0.1:{closed_port}/none", connect_timeout=5
    )
    with pytest.raises(Exception) as raised:
        await away.open_session()
    failure = classify(raised.value)
    assert (failure.type, failure.transient, failure.dependency) == (
        FailureType.INFRA,
        True,
        DATABASE,
    ), failure
