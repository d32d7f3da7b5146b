"""The embedded PostgreSQL: start, adopt existing data, and a database that goes away.

Every test starts and stops a server of its own (never the session's). They share one data
directory, so that initdb runs once, and each leaves its server stopped. The directory's
name has a '#' and a '%' on purpose: the DSN must escape them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from runtime.bridge import asyncio_loop
from runtime.failures import FailureType, InfraError, classify
from runtime.storage import Connection, Database, EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_PROC = Path(__file__).with_name("embedded_proc.py")


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded") / "pg#1%41"


@pytest.fixture
def data_dir(shared_dir: Path) -> Iterator[Path]:
    yield shared_dir
    _kill_orphan(shared_dir)


def _kill_orphan(data_dir: Path) -> None:
    """Stop a server a failed test left running, so no test leaks a PostgreSQL."""
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


def _running(server: EmbeddedPostgres) -> bool:
    return server.running  # a call, so that type checkers do not narrow the property


def _server_is_running(data_dir: Path) -> bool:
    return (data_dir / "postmaster.pid").exists()


async def _create_table(conn: Connection, name: str) -> None:
    await conn.execute(f"drop table if exists {name}")
    await conn.execute(f"create table {name} (id integer primary key)")
    await conn.execute(f"insert into {name} values (1), (2)")


async def _count(conn: Connection, name: str) -> int:
    return int(await conn.fetchval(f"select count(*) from {name}"))


async def test_a_server_starts_stops_and_adopts_its_data(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    assert _running(server) is False
    with pytest.raises(RuntimeError):
        server.dsn()

    dsn = await server.start()
    try:
        assert _running(server) is True
        assert dsn == server.dsn()
        assert "%23" in dsn and "%25" in dsn
        async with asyncio_loop():
            db = await Database.connect(server.dsn("postgres"), min_size=0)
            try:
                await db.transaction(lambda conn: _create_table(conn, "kept"))
            finally:
                await db.close()
    finally:
        await server.stop()
    assert _running(server) is False
    assert not _server_is_running(data_dir)
    await server.stop()  # stopping twice is harmless

    again = EmbeddedPostgres(data_dir)
    assert await again.start() == dsn
    try:
        async with asyncio_loop():
            db = await Database.connect(again.dsn(), min_size=0)
            try:
                assert await db.read(lambda conn: _count(conn, "kept")) == 2
            finally:
                await db.close()
    finally:
        await again.stop()
    assert not _server_is_running(data_dir)


async def test_the_same_pool_works_again_after_the_server_comes_back(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    await server.start()
    try:
        async with asyncio_loop():
            db = await Database.connect(server.dsn(), min_size=1, max_size=2)
            try:
                await db.transaction(lambda conn: _create_table(conn, "survivor"))

                await server.stop()
                for attempt in (db.transaction, db.read):
                    with pytest.raises(Exception) as raised:
                        with trio.fail_after(60):
                            await attempt(lambda conn: _count(conn, "survivor"), retry=False)
                    failure = classify(raised.value)
                    assert failure.type is FailureType.INFRA, failure
                    assert failure.transient, failure

                await server.start()
                with trio.fail_after(60):
                    assert await db.transaction(lambda conn: _count(conn, "survivor")) == 2
                    assert await db.read(lambda conn: _count(conn, "survivor")) == 2
            finally:
                await db.close()
    finally:
        await server.stop()


async def test_connecting_to_a_stopped_server_is_a_transient_failure(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    dsn = await server.start()
    await server.stop()
    async with asyncio_loop():
        with pytest.raises(InfraError) as raised:
            await Database.connect(dsn, min_size=1)
    assert classify(raised.value).transient


async def test_a_server_left_by_a_killed_process_is_adopted_then_stopped(data_dir: Path) -> None:
    """pgserver counts the processes using a server; a killed one must not keep it alive."""
    started = await trio.run_process(
        [sys.executable, str(EMBEDDED_PROC), str(data_dir)],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert started.returncode == -signal.SIGKILL, started.stderr.decode()
    assert _server_is_running(data_dir)

    server = EmbeddedPostgres(data_dir)
    assert await server.start() == started.stdout.decode().strip()
    async with asyncio_loop():
        db = await Database.connect(server.dsn(), min_size=0)
        try:
            assert await db.read(lambda conn: conn.fetchval("select 1")) == 1
        finally:
            await db.close()
    await server.stop()
    assert not _server_is_running(data_dir)


@pytest.mark.parametrize("name", ["with space", "semi;colon", "and&", "a,b", "quote'"])
async def test_a_data_directory_the_server_cannot_use_is_refused(tmp_path: Path, name: str) -> None:
    server = EmbeddedPostgres(tmp_path / name / "pg")
    with pytest.raises(InfraError, match="cannot use the data directory") as raised:
        await server.start()
    assert not classify(raised.value).transient
    assert not server.running
    assert not (tmp_path / name).exists()
