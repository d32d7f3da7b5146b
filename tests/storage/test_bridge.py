"""The seam between trio and asyncio, on every kind of loop: one crossing per unit,
cancellation waited for both ways, errors and log context carried across, leaked asyncio
errors contained, and a clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator

import pytest
import structlog
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from runtime.bridge import (
    LoopKind,
    asyncio_loop,
    call_trio,
    call_trio_soon,
    resolve_kind,
    run_asyncio,
    stats,
    trio_time,
    uvloop_installed,
)
from runtime.failures import DATABASE, InfraError
from runtime.logs import correlation, current_correlation_id
from runtime.storage import Connection, Database

KINDS: list[LoopKind] = [
    *(["uvloop"] if uvloop_installed() else []),  # type: ignore[list-item]
    "asyncio",
    "trio-asyncio",
]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> LoopKind:
    value: LoopKind = request.param
    return value


@pytest.fixture
async def loop(kind: LoopKind) -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with asyncio_loop(kind=kind) as opened:
        yield opened


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
    database_dsn: str, kind: LoopKind
) -> None:
    reports: list[tuple[str, BaseException | None]] = []

    def report(message: str, error: BaseException | None) -> None:
        assert trio.lowlevel.in_trio_run()  # trio's side: it may touch trio objects
        reports.append((message, error))

    async with asyncio_loop(report=report, kind=kind):
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


async def test_a_failing_reporter_does_not_break_the_handler(kind: LoopKind) -> None:
    def broken_report(message: str, error: BaseException | None) -> None:
        raise ValueError("the reporter is broken")

    async with asyncio_loop(report=broken_report, kind=kind):
        with capture_logs() as logs:
            await run_asyncio(_leak_a_failing_task)
        events = [line["event"] for line in logs if line.get("component") == "bridge"]
        assert events == [
            "asyncio reported an error outside any task we await",
            "the leak reporter failed",
        ]
        assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_an_error_raised_in_a_callback_is_contained_too(kind: LoopKind) -> None:
    reports: list[str] = []

    def explode() -> None:
        raise RuntimeError("a callback failed")

    async def schedule() -> None:
        asyncio.get_running_loop().call_soon(explode)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async with asyncio_loop(report=lambda message, error: reports.append(repr(error)), kind=kind):
        with capture_logs():
            await run_asyncio(schedule)
        assert reports == [repr(RuntimeError("a callback failed"))]
        assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_an_error_of_the_awaited_function_reaches_the_trio_caller(kind: LoopKind) -> None:
    async def fail() -> None:
        raise LookupError("raised on the asyncio side")

    async with asyncio_loop(kind=kind):
        before = stats.leaked_errors
        try:
            await run_asyncio(fail)
        except LookupError as exc:
            assert str(exc) == "raised on the asyncio side"
        else:  # pragma: no cover
            raise AssertionError("the error was swallowed")
        assert stats.leaked_errors == before


# -- which loop -----------------------------------------------------------------------------


async def test_the_asyncio_side_runs_where_its_kind_says(kind: LoopKind) -> None:
    async def where() -> tuple[str, bool]:
        return type(asyncio.get_running_loop()).__module__, trio.lowlevel.in_trio_run()

    async with asyncio_loop(kind=kind):
        module, in_trio = await run_asyncio(where)
    if kind == "trio-asyncio":
        assert module.startswith("trio_asyncio") and in_trio
    else:
        assert module.startswith(kind) and not in_trio  # a thread of its own


def test_auto_is_uvloop_when_installed_and_the_variable_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VPNBOT_SERVICE__ASYNCIO_LOOP", raising=False)
    assert resolve_kind() == ("uvloop" if uvloop_installed() else "asyncio")
    assert resolve_kind("auto") == resolve_kind()
    monkeypatch.setenv("VPNBOT_SERVICE__ASYNCIO_LOOP", "trio-asyncio")
    assert resolve_kind() == "trio-asyncio"
    assert resolve_kind("asyncio") == "asyncio"  # a kind given wins
    monkeypatch.setenv("VPNBOT_SERVICE__ASYNCIO_LOOP", "tokio")
    with pytest.raises(ValueError, match="VPNBOT_SERVICE__ASYNCIO_LOOP"):
        resolve_kind()


async def test_crossing_without_an_open_loop_says_so() -> None:
    with pytest.raises(RuntimeError, match="asyncio_loop"):
        await run_asyncio(asyncio.sleep, 0)


# -- trio into asyncio ----------------------------------------------------------------------


class _Resource:
    """An ``async with`` whose exit takes several asyncio steps."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __aenter__(self) -> None:
        self.events.append("entered")

    async def __aexit__(self, *exc_info: object) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.events.append("exited")


async def test_a_trio_cancellation_waits_for_the_asyncio_cleanup(
    loop: asyncio.AbstractEventLoop,
) -> None:
    events: list[str] = []
    started = trio.Event()
    seen_at_cancel: list[str] = []

    async def work() -> None:
        async with _Resource(events):
            try:
                call_trio_soon(started.set)
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0)
                events.append("finally")

    async def caller() -> None:
        try:
            await run_asyncio(work)
        except trio.Cancelled:
            seen_at_cancel.extend(events)
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert seen_at_cancel == ["entered", "finally", "exited"]


async def test_a_cancelled_trio_caller_gets_a_result_the_asyncio_side_insisted_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """An asyncio function that finishes its work despite the cancellation: its result
    stands, and trio's cancellation is raised at the caller's next checkpoint."""
    started = trio.Event()

    async def stubborn() -> str:
        call_trio_soon(started.set)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    got: list[str] = []

    async def caller() -> None:
        got.append(await run_asyncio(stubborn))
        await trio.lowlevel.checkpoint()
        got.append("not reached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert got == ["finished anyway"]


async def test_an_error_keeps_its_class_and_attributes_into_trio(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def fail() -> None:
        raise InfraError("the database went away", transient=True, dependency=DATABASE)

    with pytest.raises(InfraError) as raised:
        await run_asyncio(fail)
    assert (str(raised.value), raised.value.transient, raised.value.dependency) == (
        "the database went away",
        True,
        DATABASE,
    )


async def test_a_function_that_fails_before_awaiting_fails_the_crossing(
    loop: asyncio.AbstractEventLoop,
) -> None:
    def not_async() -> None:
        raise KeyError("raised while making the awaitable")

    with pytest.raises(KeyError, match="making the awaitable"):
        await run_asyncio(not_async)  # type: ignore[arg-type]
    assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_the_log_context_goes_along_into_asyncio(loop: asyncio.AbstractEventLoop) -> None:
    async def seen() -> str:
        return current_correlation_id()

    with correlation("c-trio-1"):
        assert await run_asyncio(seen) == "c-trio-1"
    assert await run_asyncio(seen) == "-"


# -- asyncio into trio ----------------------------------------------------------------------


async def test_call_trio_returns_and_carries_the_log_context_back(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def in_trio(value: int) -> tuple[int, str, bool]:
        await trio.lowlevel.checkpoint()
        return value * 2, current_correlation_id(), trio.lowlevel.in_trio_run()

    async def handler() -> tuple[int, str, bool]:
        structlog.contextvars.bind_contextvars(correlation_id="c-handler-7")
        return await call_trio(in_trio, 21)

    assert await run_asyncio(handler) == (42, "c-handler-7", True)
    assert current_correlation_id() == "-"  # the asyncio side's binding stayed there


async def test_an_error_keeps_its_class_and_attributes_into_asyncio(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def in_trio() -> None:
        await trio.lowlevel.checkpoint()
        raise InfraError("the panel is down", transient=False, dependency="panel")

    async def handler() -> tuple[str, str, bool, str | None]:
        try:
            await call_trio(in_trio)
        except InfraError as exc:
            return type(exc).__name__, str(exc), exc.transient, exc.dependency
        raise AssertionError("the error was swallowed")

    assert await run_asyncio(handler) == ("InfraError", "the panel is down", False, "panel")


async def test_an_asyncio_cancellation_cancels_the_trio_side_and_waits_for_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    events: list[str] = []
    trio_started = asyncio.Event()

    async def mark_started() -> None:
        trio_started.set()

    async def in_trio() -> None:
        await run_asyncio(mark_started)  # a crossing back, from inside a crossing
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()
                events.append("trio cleaned up")

    async def handler() -> tuple[str, list[str]]:
        task = asyncio.ensure_future(call_trio(in_trio))
        await trio_started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            return type(exc).__module__ + "." + type(exc).__name__, list(events)
        except BaseException as exc:
            return f"leaked {type(exc)!r}", list(events)
        return "not cancelled", list(events)

    assert await run_asyncio(handler) == ("asyncio.exceptions.CancelledError", ["trio cleaned up"])


async def test_call_trio_soon_touches_trio_objects_in_order_with_the_crossing(
    loop: asyncio.AbstractEventLoop,
) -> None:
    event = trio.Event()
    seen: list[str] = []

    def note() -> None:
        assert trio.lowlevel.in_trio_run()
        seen.append(current_correlation_id())
        event.set()

    async def callback_side() -> None:
        with correlation("c-soon-3"):
            call_trio_soon(note)

    await run_asyncio(callback_side)
    assert event.is_set()  # handed over before the crossing's own answer
    assert seen == ["c-soon-3"]


async def test_a_failing_hand_over_is_logged_not_raised(loop: asyncio.AbstractEventLoop) -> None:
    def broken() -> None:
        raise ValueError("broken callback")

    async def callback_side() -> str:
        call_trio_soon(broken)
        return "caller unaffected"

    with capture_logs() as logs:
        assert await run_asyncio(callback_side) == "caller unaffected"
        await trio.testing.wait_all_tasks_blocked()
    [line] = [line for line in logs if line.get("operation") == "bridge.handover"]
    assert line["failure_type"] == "bug" and line["log_level"] == "error"
    assert await run_asyncio(asyncio.sleep, 0, "alive") == "alive"


async def test_trio_time_reads_trios_clock_from_the_asyncio_side(
    kind: LoopKind, mock_clock: trio.testing.MockClock
) -> None:
    async with asyncio_loop(kind=kind):
        mock_clock.jump(1234.5)

        async def read() -> float:
            return trio_time()

        assert await run_asyncio(read) == trio.current_time()


# -- closing --------------------------------------------------------------------------------


async def test_closing_cancels_leftover_tasks_and_finalises_async_generators(
    kind: LoopKind,
) -> None:
    events: list[str] = []
    trio_cleaned = trio.Event()
    running = trio.Event()

    async def trio_waits() -> None:
        try:
            await trio.sleep_forever()
        finally:
            trio_cleaned.set()

    async def leftover() -> None:
        try:
            call_trio_soon(running.set)
            await call_trio(trio_waits)
        finally:
            await asyncio.sleep(0)
            events.append("leftover task cleaned up")

    async def numbers() -> AsyncIterator[int]:
        try:
            for n in range(10):
                yield n
        finally:
            events.append("generator finalised")

    async def start_them() -> None:
        asyncio.get_running_loop().create_task(leftover())
        generator = numbers()
        await generator.__anext__()
        started.append(generator)  # kept alive: only the loop's shutdown can finalise it

    started: list[AsyncIterator[int]] = []
    async with asyncio_loop(kind=kind):
        await run_asyncio(start_them)
        await running.wait()
    assert sorted(events) == ["generator finalised", "leftover task cleaned up"]
    assert trio_cleaned.is_set()
    assert not [t for t in threading.enumerate() if t.name == "asyncio-loop"]


async def test_a_cancelled_trio_does_not_hang_in_the_loop(kind: LoopKind) -> None:
    cleaned: list[str] = []
    sleeping = trio.Event()

    async def sleeps() -> None:
        try:
            call_trio_soon(sleeping.set)
            await asyncio.sleep(3600)
        finally:
            cleaned.append("asyncio side cleaned up")

    with trio.move_on_after(30) as deadline:  # a generous bound: the test is about a hang
        with trio.CancelScope() as scope:
            async with asyncio_loop(kind=kind), trio.open_nursery() as nursery:
                nursery.start_soon(run_asyncio, sleeps)
                await sleeping.wait()
                scope.cancel()
    assert not deadline.cancelled_caught
    assert cleaned == ["asyncio side cleaned up"]
    assert not [t for t in threading.enumerate() if t.name == "asyncio-loop"]


async def test_an_error_in_the_body_leaves_the_loop_as_it_was_raised(kind: LoopKind) -> None:
    with pytest.raises(LookupError, match="raised inside"):
        async with asyncio_loop(kind=kind):
            await run_asyncio(asyncio.sleep, 0)
            raise LookupError("raised inside")
    assert not [t for t in threading.enumerate() if t.name == "asyncio-loop"]
