"""The seam between trio and asyncio: one crossing per unit, leaked asyncio errors contained."""

from __future__ import annotations

import asyncio
import gc

from structlog.testing import capture_logs

from runtime.bridge import asyncio_loop, run_asyncio, stats
from runtime.storage import Connection, Database


async def test_a_transaction_with_several_queries_crosses_once(db: Database) -> None:
    async def unit(conn: Connection) -> int:
        await conn.execute("insert into users (telegram_id) values (1)")
        await conn.execute("insert into users (telegram_id) values (2)")
        await conn.execute("update users set username = 'x' where telegram_id = 1")
        return int(await conn.fetchval("select count(*) from users"))

    before = stats.crossings
    assert await db.transaction(unit) == 2
    assert stats.crossings - before == 1


async def test_a_read_crosses_once(db: Database) -> None:
    async def unit(conn: Connection) -> tuple[int, int]:
        first = await conn.fetchval("select count(*) from users")
        second = await conn.fetchval("select count(*) from payments")
        return int(first), int(second)

    before = stats.crossings
    assert await db.read(unit) == (0, 0)
    assert stats.crossings - before == 1


async def test_a_session_with_its_own_transactions_crosses_once(db: Database) -> None:
    async def unit(conn: Connection) -> int:
        async with conn.transaction():
            await conn.execute("insert into users (telegram_id) values (1)")
        async with conn.transaction():
            await conn.execute("insert into users (telegram_id) values (2)")
        return int(await conn.fetchval("select count(*) from users"))

    before = stats.crossings
    assert await db.session(unit) == 2
    assert stats.crossings - before == 1


async def test_a_read_runs_in_a_read_only_transaction(db: Database) -> None:
    async def unit(conn: Connection) -> str:
        return str(await conn.fetchval("show transaction_read_only"))

    assert await db.read(unit) == "on"


async def _leak_a_failing_task() -> None:
    """Start an asyncio task that fails and is never awaited, then let it be collected."""

    async def fail() -> None:
        raise RuntimeError("nobody awaits me")

    task = asyncio.get_running_loop().create_task(fail())
    await asyncio.wait([task])  # done, but its exception is never retrieved
    del task
    gc.collect()  # the task's finaliser hands the error to the loop's exception handler


async def test_a_leaked_asyncio_error_is_logged_and_reported_and_the_loop_survives(
    database_dsn: str,
) -> None:
    reports: list[tuple[str, BaseException | None]] = []
    async with asyncio_loop(report=lambda message, error: reports.append((message, error))):
        db = await Database.connect(database_dsn, min_size=0, max_size=2)
        try:
            leaked_before = stats.leaked_errors
            with capture_logs() as logs:
                await run_asyncio(_leak_a_failing_task)
            assert stats.leaked_errors - leaked_before == 1
            [(message, error)] = reports
            assert "never retrieved" in message
            assert isinstance(error, RuntimeError)
            assert str(error) == "nobody awaits me"
            [line] = [line for line in logs if line.get("component") == "bridge"]
            assert line["log_level"] == "error"
            assert line["failure_type"] == "bug"
            assert line["outcome"] == "failed"
            assert "nobody awaits me" in line["error"]

            # The loop is still there: later crossings, database ones included, work.
            async def unit(conn: Connection) -> int:
                return int(await conn.fetchval("select 41 + 1"))

            assert await db.transaction(unit) == 42
            assert await run_asyncio(asyncio.sleep, 0, 7) == 7
        finally:
            await db.close()


async def test_a_failing_reporter_does_not_break_the_handler() -> None:
    def broken_report(message: str, error: BaseException | None) -> None:
        raise ValueError("the reporter is broken")

    async with asyncio_loop(report=broken_report):
        with capture_logs() as logs:
            await run_asyncio(_leak_a_failing_task)
        events = [line["event"] for line in logs if line.get("component") == "bridge"]
        assert events == [
            "asyncio reported an error outside any task we await",
            "the leak reporter failed",
        ]
        assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_an_error_raised_in_a_callback_is_contained_too() -> None:
    reports: list[str] = []

    def explode() -> None:
        raise RuntimeError("a callback failed")

    async def schedule() -> None:
        asyncio.get_running_loop().call_soon(explode)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async with asyncio_loop(report=lambda message, error: reports.append(repr(error))):
        with capture_logs():
            await run_asyncio(schedule)
        assert reports == [repr(RuntimeError("a callback failed"))]
        assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_an_error_of_the_awaited_function_reaches_the_trio_caller() -> None:
    async def fail() -> None:
        raise LookupError("raised on the asyncio side")

    async with asyncio_loop():
        before = stats.leaked_errors
        try:
            await run_asyncio(fail)
        except LookupError as exc:
            assert str(exc) == "raised on the asyncio side"
        else:  # pragma: no cover
            raise AssertionError("the error was swallowed")
        assert stats.leaked_errors == before
