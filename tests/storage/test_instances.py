"""One live process per instance id, against a real PostgreSQL and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest
import trio

from runtime.app._identity import SETTING, InstanceInUse, claim_instance, keep_instance
from runtime.bridge import run_asyncio
from runtime.failures import InfraError
from runtime.storage import Connection, Database
from runtime.storage.instances import InstanceLock, lock_key

ROOT = Path(__file__).resolve().parents[2]
HOLDER = Path(__file__).with_name("instance_proc.py")


@pytest.fixture
async def other(db: Database, database_dsn: str) -> AsyncIterator[Database]:
    """A second pool on the same database: another process, as the server sees it."""
    database = await Database.connect(database_dsn, min_size=0, max_size=2)
    try:
        yield database
    finally:
        await database.close()


async def terminate(db: Database, lock: InstanceLock) -> None:
    """End the lock's session from the server's side (a restart, a network cut)."""
    holder = await lock.holder()
    assert holder is not None

    async def unit(conn: Connection) -> None:
        # waits (up to 10 s) until the backend is gone
        assert await conn.fetchval("select pg_terminate_backend($1, 10000)", holder.backend_pid)

    await db.transaction(unit)


async def _terminate(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """asyncpg's ``terminate()``, on asyncio's side where the connection lives."""
    conn.terminate()


def ignore(reason: str) -> None:
    raise AssertionError(f"the live holder lost its id: {reason}")


def test_lock_keys_differ_per_instance_id() -> None:
    keys = {lock_key(name) for name in ("vpn-1", "vpn-2", "host/vpnbot", "host/vpnbot@2")}
    assert len(keys) == 4
    assert lock_key("vpn-1") == lock_key("vpn-1")


async def test_one_holder_per_instance_id(db: Database, other: Database) -> None:
    first, second = InstanceLock(db, "vpn-1"), InstanceLock(other, "vpn-1")
    elsewhere = InstanceLock(other, "vpn-2")
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await elsewhere.try_acquire()  # ids are independent
        holder = await second.holder()
        assert holder is not None and holder.application_name == first.label
        assert f"pid {os.getpid()}@" in holder.describe()

        await first.close()
        assert await second.try_acquire()  # free the moment the holder's session ends
    finally:
        for lock in (first, second, elsewhere):
            await lock.close()


async def test_a_live_holder_is_refused_at_once_and_named(db: Database, other: Database) -> None:
    live, newcomer = InstanceLock(db, "vpn-1"), InstanceLock(other, "vpn-1")
    try:
        assert await live.try_acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(keep_instance, live, ignore, every=0.05))
            # a patience far past the test's deadline: only the holder's pings refuse it
            with trio.fail_after(30), pytest.raises(InstanceInUse) as refused:
                await claim_instance(newcomer, patience=3600)
            nursery.cancel_scope.cancel()
        message = str(refused.value)
        assert SETTING in message and "'vpn-1'" in message and live.label in message
        assert "it is alive" in message
        assert not newcomer.held
    finally:
        await live.close()
        await newcomer.close()


async def test_a_silent_holder_is_refused_after_the_patience(db: Database, other: Database) -> None:
    """A session that holds the lock but shows no life (a vanished host's, not yet ended
    by keepalives) is not taken over: the start is refused after waiting."""
    silent, newcomer = InstanceLock(db, "vpn-1"), InstanceLock(other, "vpn-1")
    try:
        assert await silent.try_acquire()
        with pytest.raises(InstanceInUse, match="no sign of life"):
            await claim_instance(newcomer, patience=0.5, poll=0.05)
        assert await silent.holder() is not None
    finally:
        await silent.close()
        await newcomer.close()


async def test_a_killed_holders_id_is_free_at_once(db: Database, database_dsn: str) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HOLDER), database_dsn, "vpn-1"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lock = InstanceLock(db, "vpn-1")
    try:
        assert process.stdout is not None
        said = b""
        with trio.fail_after(30):
            while not said.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the holder process ended"
                said += chunk
        assert said == b"held\n"
        assert not await lock.try_acquire()
        process.send_signal(signal.SIGKILL)
        with trio.fail_after(60):
            await process.wait()
        # the kernel closed its socket: the lock is free without waiting for anything
        with trio.fail_after(30):
            await claim_instance(lock, patience=3600)
        assert lock.held
    finally:
        if process.returncode is None:
            process.kill()
        await lock.close()


async def test_the_holder_takes_its_lock_again_after_losing_its_session(db: Database) -> None:
    lock = InstanceLock(db, "vpn-1")
    lost: list[str] = []
    try:
        assert await lock.try_acquire()
        await terminate(db, lock)
        with pytest.raises(InfraError):
            await lock.ping()
        assert not lock.held
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(keep_instance, lock, lost.append, every=0.05))
            with trio.fail_after(30):
                while not lock.held:  # noqa: ASYNC110 - set by keep_instance
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        holder = await lock.holder()
        assert holder is not None and holder.application_name == lock.label
        assert lost == []
    finally:
        await lock.close()


async def test_a_holder_whose_id_was_taken_meanwhile_is_told(db: Database, other: Database) -> None:
    """Its session gone (a network cut), another process with the same id started and
    took the lock: the first one learns it must stop."""
    first, second = InstanceLock(db, "vpn-1"), InstanceLock(other, "vpn-1")
    lost: list[str] = []
    try:
        assert await first.try_acquire()
        await terminate(db, first)
        with pytest.raises(InfraError):
            await first.ping()
        assert await second.try_acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(keep_instance, second, ignore, every=0.05))
            with trio.fail_after(30):
                await keep_instance(first, lost.append, every=0.05)
            nursery.cancel_scope.cancel()
        (reason,) = lost
        assert SETTING in reason and second.label in reason
        assert not first.held
    finally:
        await first.close()
        await second.close()


async def test_a_stale_session_of_this_very_process_is_ended_not_waited_for(
    db: Database,
) -> None:
    """The server still holds a session the process has lost track of (its connection
    was cut, the server has not noticed): it is this process's own, so it is ended."""
    lock = InstanceLock(db, "vpn-1")
    stale = None
    try:
        assert await lock.try_acquire()
        before = await lock.holder()
        assert before is not None
        stale, lock._conn = lock._conn, None  # the process lost track of it
        with trio.fail_after(30):
            assert await lock.try_acquire()
        after = await lock.holder()
        assert after is not None and after.application_name == lock.label
        assert after.backend_pid != before.backend_pid

        async def alive(conn: Connection) -> bool:
            found = await conn.fetchval(
                "select count(*) from pg_stat_activity where pid = $1", before.backend_pid
            )
            return bool(found)

        assert not await db.read(alive)
    finally:
        if stale is not None:
            await run_asyncio(_terminate, stale)
        await lock.close()
