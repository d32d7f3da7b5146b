"""A completed job survives a crash of the server and is never run again.

Claims commit without waiting for the disk (a lost claim only makes its job due again);
completions must not. These tests crash a server of their own the way a power cut looks to
PostgreSQL's shared memory: a backend killed with SIGKILL makes the postmaster end every
session and recover from the WAL, so whatever a commit left in the WAL buffers, unwritten,
is gone. The server runs with ``fsync = off`` (a process crash, not a machine's, so what
was written to the kernel survives) and the database with ``synchronous_commit = on``, the
default the test servers of the other tests turn off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.storage import Connection, Database, EmbeddedPostgres, apply_migrations
from runtime.storage._database import terminate
from runtime.storage.outbox import claim, complete, counts, enqueue_jobs, take_back
from runtime.storage.outbox_lanes import drain

KIND = "test.job"


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="vpnbot-crash-", dir=shm if shm.is_dir() else None))
    server = EmbeddedPostgres(root / "data")
    server.start_blocking()
    try:
        yield server
    finally:
        server.stop_blocking()
        shutil.rmtree(root, ignore_errors=True)


_names = iter(range(1, 1000))


async def _admin(server: EmbeddedPostgres, *statements: str) -> None:
    conn = await asyncpg.connect(server.dsn())
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def dsn(server: EmbeddedPostgres) -> str:
    name = f"crash_{next(_names)}"
    async with asyncio_loop():
        await run_asyncio(
            _admin,
            server,
            "alter system set fsync = off",
            "select pg_reload_conf()",
            f"drop database if exists {name}",
            f"create database {name}",
            f"alter database {name} set synchronous_commit = on",
        )
        db = await Database.connect(server.dsn(name), min_size=0, max_size=2)
        try:
            await apply_migrations(db)
        finally:
            await db.close()
    return server.dsn(name)


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[Database]:
    async with asyncio_loop():
        database = await Database.connect(dsn, min_size=0, max_size=4)
        try:
            yield database
        finally:
            with trio.move_on_after(10):
                await database.close()


@pytest.fixture
async def victim(db: Database) -> AsyncIterator[int]:
    """The pid of a server process to kill, a session of its own: any backend's crash
    restarts them all."""
    session = await db.open_session()
    try:
        pid: int = await run_asyncio(session.fetchval, "select pg_backend_pid()")
        yield pid
    finally:
        await run_asyncio(terminate, session)


async def _accepting(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    await conn.close()


def _reaped(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


async def recovered(dsn: str, victim: int) -> Database:
    """A fresh pool once the server has recovered from the crash. The postmaster reaps the
    killed process and refuses connections from then on until its recovery is done."""
    with trio.fail_after(120):
        while True:
            if _reaped(victim):
                try:
                    await run_asyncio(_accepting, dsn)
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pass
            await trio.sleep(0.05)
    return await Database.connect(dsn, min_size=0, max_size=4)


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


async def test_a_completion_is_on_disk_when_it_returns(db: Database, dsn: str, victim: int) -> None:
    await enqueue_jobs(db, kind=KIND, jobs=[(f"j{i}", {"i": i}) for i in range(20)])
    jobs = await claim(db, kinds=[KIND], owner="w", limit=10, claim_seconds=60)
    assert len(jobs) == 10
    counted = await complete(db, jobs, owner="w")
    assert counted == {j.id for j in jobs}
    os.kill(victim, signal.SIGKILL)  # the moment the completion has returned

    after = await recovered(dsn, victim)
    try:
        done = await rows(after, "select id, claimed_by from outbox where status = 'done'")
        assert {r["id"] for r in done} == counted
        assert {r["claimed_by"] for r in done} == {"w"}
        # a new claimer gets the other ten jobs, never a completed one
        again = await claim(after, kinds=[KIND], owner="w2", limit=50, claim_seconds=60)
        assert len(again) == 10 and not {j.id for j in again} & counted
    finally:
        await after.close()


async def test_jobs_reported_done_before_a_crash_are_not_run_again(
    db: Database, dsn: str, victim: int
) -> None:
    await enqueue_jobs(db, kind=KIND, jobs=[(f"j{i}", {"i": i}) for i in range(300)])
    ran: Counter[int] = Counter()
    reported: Counter[int] = Counter()
    at_crash: Counter[int] = Counter()
    """How often each job had run when the server was killed, for the jobs reported done."""
    batches = 0

    async def handle(jobs: list[Any]) -> list[Any]:
        ran.update(j.id for j in jobs)
        await trio.lowlevel.checkpoint()
        return jobs

    def on_done(ids: frozenset[int]) -> None:
        nonlocal batches
        reported.update(ids)
        batches += 1
        if batches == 5:  # crash the server right after this completion returned
            at_crash.update({i: ran[i] for i in reported})
            os.kill(victim, signal.SIGKILL)

    # A statement on a killed connection usually ends the drain; a lane that was between
    # statements may reconnect once the recovery is done, and go on.
    with contextlib.suppress(Exception):
        await drain(
            db,
            handle,
            kinds=[KIND],
            owner="crash:1",
            limit=10,
            claim_seconds=600,
            lanes=2,
            on_done=on_done,
        )
    assert len(at_crash) >= 50

    after = await recovered(dsn, victim)
    try:
        done = {r["id"] for r in await rows(after, "select id from outbox where status = 'done'")}
        assert set(at_crash) <= done, "a job reported done was lost in the crash"
        await take_back(after, owner_prefix="crash:")  # the restarted instance's first step
        total = await drain(
            after, handle, kinds=[KIND], owner="crash:2", limit=10, claim_seconds=600
        )
        assert total == 300 - len(done)
        run_again = {i for i, times in at_crash.items() if ran[i] > times}
        assert not run_again, f"jobs run again after they were reported done: {run_again}"
        assert set(reported.values()) == {1}
        assert await counts(after) == {"pending": 0, "done": 300, "dead": 0}
        assert set(ran) == {r["id"] for r in await rows(after, "select id from outbox")}
    finally:
        await after.close()
