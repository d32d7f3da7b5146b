"""Migrations against a real PostgreSQL, and what the schema promises."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import asyncpg
import pytest
import trio

from runtime.bridge import asyncio_loop, call_trio_soon, run_asyncio
from runtime.failures import FailureType, classify
from runtime.storage import (
    Connection,
    Database,
    MigrationError,
    Work,
    _migrations,
    apply_migrations,
    load_migrations,
    pending_migrations,
)
from runtime.storage._migrations import _LOCK_KEY
from runtime.testing.postgres import TestPostgres

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
MIGRATE_PROC = Path(__file__).with_name("migrate_proc.py")


@pytest.fixture
def blank_dsn(postgres: TestPostgres) -> str:
    """A fresh database that has never been migrated."""
    return postgres.new_database(migrated=False)


@pytest.fixture
async def blank_db(blank_dsn: str) -> AsyncIterator[Database]:
    async with asyncio_loop():
        database = await Database.connect(blank_dsn, min_size=0, max_size=4)
        try:
            yield database
        finally:
            await database.close()


async def _applied(db: Database) -> list[tuple[int, str, str]]:
    async def unit(conn: Connection) -> list[tuple[int, str, str]]:
        rows = await conn.fetch("select version, name, checksum from schema_migrations")
        return sorted((row["version"], row["name"], row["checksum"]) for row in rows)

    return await db.read(unit)


def _expected() -> list[tuple[int, str, str]]:
    return [(m.version, m.name, m.checksum) for m in load_migrations()]


async def _execute(db: Database, sql: str, *args: object) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


# -- applying -----------------------------------------------------------------------------


def test_the_migrations_are_numbered_from_one() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].label == "0001_initial"


def _ship(monkeypatch: pytest.MonkeyPatch, root: Path, files: dict[str, str] | None) -> None:
    """Make ``load_migrations`` read ``files`` (None: no migrations folder at all)."""
    if files is not None:
        (root / "migrations").mkdir()
        for name, text in files.items():
            (root / "migrations" / name).write_text(text)
    monkeypatch.setattr(_migrations, "resources", SimpleNamespace(files=lambda package: root))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, "no migrations found"),
        ({"README.md": "notes"}, "no migrations found"),
        ({"0001_a.sql": "", "0003_c.sql": ""}, "without gaps"),
        ({"0001_a.sql": "", "0001_b.sql": ""}, "without gaps"),
        ({"0001_a.sql": "", "0002_Add_Index.sql": ""}, "is not named like"),
        ({"0001_a.sql": "", "2_b.sql": ""}, "is not named like"),
    ],
)
def test_a_broken_set_of_migrations_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str] | None, message: str
) -> None:
    _ship(monkeypatch, tmp_path, files)
    with pytest.raises(MigrationError, match=message):
        load_migrations()


def test_migrations_are_read_in_order_and_other_files_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _ship(
        monkeypatch,
        tmp_path,
        {"0002_b.sql": "select 2", "0001_a.sql": "select 1", "README.md": "notes"},
    )
    assert [(m.label, m.sql) for m in load_migrations()] == [
        ("0001_a", "select 1"),
        ("0002_b", "select 2"),
    ]


async def test_a_fresh_database_has_everything_pending(blank_db: Database) -> None:
    assert await pending_migrations(blank_db) == load_migrations()


async def test_apply_applies_everything_once(blank_db: Database) -> None:
    assert await apply_migrations(blank_db) == load_migrations()
    assert await _applied(blank_db) == _expected()
    assert await pending_migrations(blank_db) == []
    assert await apply_migrations(blank_db) == []
    assert await _applied(blank_db) == _expected()


async def test_the_test_template_is_fully_migrated(db: Database) -> None:
    assert await pending_migrations(db) == []
    assert await _applied(db) == _expected()


class _LockHolder:
    """Holds the migration lock on a connection of its own until told to let go, so that
    migrators started meanwhile really queue up behind one another."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._held = trio.Event()
        self._release = asyncio.Event()

    async def _hold(self, conn: Connection) -> None:
        await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
        try:
            call_trio_soon(self._held.set)
            await self._release.wait()
        finally:
            await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)

    async def hold(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._db.session, self._hold)
        await self._held.wait()

    async def release_when_waiting(self, waiters: int) -> None:
        async def count(conn: Connection) -> int:
            return int(
                await conn.fetchval(
                    "select count(*) from pg_locks l join pg_database d on d.oid = l.database"
                    " where d.datname = current_database() and l.locktype = 'advisory'"
                    " and not l.granted"
                )
            )

        while True:
            if await self._db.read(count) >= waiters:
                break
            await trio.sleep(0.01)

        async def release() -> None:
            self._release.set()

        await run_asyncio(release)


async def test_two_concurrent_migrators_apply_each_migration_once(
    blank_db: Database, blank_dsn: str
) -> None:
    results: list[list[int]] = []
    other = await Database.connect(blank_dsn, min_size=0, max_size=2)
    try:

        async def migrate(db: Database) -> None:
            results.append([m.version for m in await apply_migrations(db)])

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                lock = _LockHolder(blank_db)
                await lock.hold(nursery)
                nursery.start_soon(migrate, blank_db)
                nursery.start_soon(migrate, other)
                await lock.release_when_waiting(2)
    finally:
        await other.close()

    everything = [m.version for m in load_migrations()]
    assert sorted(results) == [[], everything]
    assert await _applied(blank_db) == _expected()


async def test_two_migrating_processes_apply_each_migration_once(
    blank_db: Database, blank_dsn: str
) -> None:
    outputs: list[str] = []

    async def migrate() -> None:
        done = await trio.run_process(
            [sys.executable, str(MIGRATE_PROC), blank_dsn],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout.decode().strip().splitlines()[-1])

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            lock = _LockHolder(blank_db)
            await lock.hold(nursery)
            nursery.start_soon(migrate)
            nursery.start_soon(migrate)
            await lock.release_when_waiting(2)

    everything = [m.version for m in load_migrations()]
    assert sorted(json.loads(output) for output in outputs) == [[], everything]
    assert await _applied(blank_db) == _expected()


# -- disagreements between the code and the database ------------------------------------------


async def test_a_changed_migration_is_refused(db: Database) -> None:
    await _execute(db, "update schema_migrations set checksum = 'edited' where version = 1")
    with pytest.raises(MigrationError, match="0001_initial changed after it was applied"):
        await apply_migrations(db)
    with pytest.raises(MigrationError, match="changed"):
        await pending_migrations(db)


async def test_a_database_migrated_by_newer_code_is_refused(db: Database) -> None:
    await _execute(
        db,
        "insert into schema_migrations (version, name, checksum) values (999, 'future', 'x')",
    )
    with pytest.raises(MigrationError, match="newer") as raised:
        await apply_migrations(db)
    assert "999" in str(raised.value)
    failure = classify(raised.value)
    assert failure.type is FailureType.INFRA
    assert not failure.transient
    with pytest.raises(MigrationError, match="newer"):
        await pending_migrations(db)


async def test_a_refused_migration_leaves_the_lock_free(db: Database, database_dsn: str) -> None:
    await _execute(db, "update schema_migrations set checksum = 'edited' where version = 1")
    with pytest.raises(MigrationError):
        await apply_migrations(db)

    async def lock_elsewhere() -> bool:
        # A connection outside the pool: the lock is reentrant within one session.
        other = await asyncpg.connect(database_dsn)
        try:
            return bool(await other.fetchval("select pg_try_advisory_lock($1)", _LOCK_KEY))
        finally:
            await other.close()

    assert await run_asyncio(lock_elsewhere)


# -- what the schema promises -------------------------------------------------------------------
# These tests share one migrated database: each one's writes are rolled back.


@pytest.fixture(scope="module")
def schema_dsn(postgres: TestPostgres) -> str:
    return postgres.new_database()


@pytest.fixture
async def schema_db(schema_dsn: str) -> AsyncIterator[Database]:
    async with asyncio_loop():
        database = await Database.connect(schema_dsn, min_size=0, max_size=2)
        try:
            yield database
        finally:
            await database.close()


class _RollBack(Exception):
    pass


async def _rolled_back(db: Database, work: Work[T]) -> T:
    """Run ``work`` in a transaction that is then rolled back; returns what it returned."""
    results: list[T] = []

    async def unit(conn: Connection) -> None:
        results.append(await work(conn))
        raise _RollBack

    with pytest.raises(_RollBack):
        await db.transaction(unit)
    return results[0]


async def _user_with_payment(conn: Connection, status: str = "created") -> str:
    await conn.execute("insert into users (telegram_id) values (1)")
    return str(
        await conn.fetchval(
            "insert into payments (user_id, provider, external_id, amount_minor, currency,"
            " purpose, status) values (1, 'stars', 'charge-1', 100, 'XTR', 'topup', $1)"
            " returning id",
            status,
        )
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("created", "invoiced"),
        ("created", "paid"),
        ("invoiced", "paid"),
        ("expired", "paid"),
        ("paid", "finalized"),
        ("finalized", "refunded"),
        ("paid", "paid"),
    ],
)
async def test_a_payment_moves_forward(schema_db: Database, before: str, after: str) -> None:
    async def unit(conn: Connection) -> str:
        payment = await _user_with_payment(conn, before)
        await conn.execute("update payments set status = $1 where id = $2", after, payment)
        return str(await conn.fetchval("select status from payments where id = $1", payment))

    assert await _rolled_back(schema_db, unit) == after


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("finalized", "created"),
        ("finalized", "paid"),
        ("paid", "created"),
        ("paid", "invoiced"),
        ("refunded", "paid"),
        ("created", "finalized"),
        ("failed", "paid"),
    ],
)
async def test_a_payment_never_moves_backward(schema_db: Database, before: str, after: str) -> None:
    async def unit(conn: Connection) -> None:
        payment = await _user_with_payment(conn, before)
        await conn.execute("update payments set status = $1 where id = $2", after, payment)

    with pytest.raises(asyncpg.CheckViolationError, match=f"cannot move from {before} to"):
        await schema_db.transaction(unit)


async def test_a_provider_charge_is_recorded_once(schema_db: Database) -> None:
    async def unit(conn: Connection) -> None:
        await _user_with_payment(conn)
        await conn.execute(
            "insert into payments (user_id, provider, external_id, amount_minor, currency,"
            " purpose) values (1, 'stars', 'charge-1', 100, 'XTR', 'topup')"
        )

    with pytest.raises(asyncpg.UniqueViolationError):
        await schema_db.transaction(unit)

    async def other_provider(conn: Connection) -> int:
        await _user_with_payment(conn)
        await conn.execute(
            "insert into payments (user_id, provider, external_id, amount_minor, currency,"
            " purpose) values (1, 'cryptobot', 'charge-1', 100, 'USDT', 'topup')"
        )
        return int(await conn.fetchval("select count(*) from payments"))

    assert await _rolled_back(schema_db, other_provider) == 2


async def test_a_balance_never_goes_negative(schema_db: Database) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute("insert into users (telegram_id, balance_minor) values (1, 50)")
        await conn.execute("update users set balance_minor = balance_minor - 51")

    with pytest.raises(asyncpg.CheckViolationError):
        await schema_db.transaction(unit)


async def test_an_outbox_job_is_written_once_per_dedup_key(schema_db: Database) -> None:
    async def unit(conn: Connection) -> None:
        for _ in range(2):
            await conn.execute(
                "insert into outbox (kind, dedup_key) values ('notify', 'payment:1:notify')"
            )

    with pytest.raises(asyncpg.UniqueViolationError):
        await schema_db.transaction(unit)
