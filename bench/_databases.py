"""What every benchmark needs first: an embedded PostgreSQL and fresh, migrated databases."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import trio

from runtime.bridge import asyncio_loop
from runtime.storage import Database, EmbeddedPostgres, apply_migrations


async def _create(admin_dsn: str, names: Mapping[str, bool]) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for name, durable in names.items():
            await conn.execute(f"drop database if exists {name}")
            await conn.execute(f"create database {name}")
            if not durable:
                await conn.execute(f"alter database {name} set synchronous_commit = off")
    finally:
        await conn.close()


async def _migrate(dsns: Mapping[str, str]) -> None:
    async with asyncio_loop():
        for dsn in dsns.values():
            db = await Database.connect(dsn, min_size=1, max_size=1)
            try:
                await apply_migrations(db)
            finally:
                await db.close()


@contextmanager
def bench_databases(databases: Mapping[str, tuple[str, bool]]) -> Iterator[dict[str, str]]:
    """``{label: (database name, durable)}`` -> ``{label: dsn}``, on a server of its own in
    a temporary directory that is removed afterwards. Non-durable databases commit with
    ``synchronous_commit = off``."""
    with tempfile.TemporaryDirectory(prefix="vpnbot-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        server.start_blocking()
        try:
            asyncio.run(_create(server.dsn(), dict(databases.values())))
            dsns = {label: server.dsn(name) for label, (name, _) in databases.items()}
            trio.run(_migrate, dsns)
            yield dsns
        finally:
            server.stop_blocking()


async def truncate(conn: Any, tables: str) -> None:
    """``truncate <tables> cascade`` between runs, the append-only audit log included: its
    trigger refuses TRUNCATE, so it is skipped for this statement (the benches own their
    databases)."""
    await conn.execute("set session_replication_role = replica")
    try:
        await conn.execute(f"truncate {tables} cascade")
    finally:
        await conn.execute("set session_replication_role = origin")
