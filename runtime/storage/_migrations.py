"""Numbered plain-SQL migrations, applied in order, each in its own transaction.

A session advisory lock serialises processes that start together; it is released when
the connection closes, so a killed migrator does not leave it held.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from runtime.failures import InfraError

from ._database import Connection, Database

_LOCK_KEY = 0x7670_6E62_6F74  # "vpnbot"
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_TABLE = """
create table if not exists schema_migrations (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


class MigrationError(InfraError):
    """The database and the code disagree about the schema; an operator must look."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in order.

    Raises ``MigrationError`` when there are none (a package built without its SQL files
    would otherwise look like a database with nothing to do), when a ``.sql`` file is not
    named like ``0001_name.sql`` (it would be skipped silently), and for gaps or duplicates.
    """
    folder = resources.files("runtime.storage").joinpath("migrations")
    try:
        entries = list(folder.iterdir())
    except OSError:
        entries = []
    found = []
    for entry in entries:
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(
                f"migration file {entry.name!r} is not named like 0001_lower_case_name.sql"
            )
    if not found:
        raise MigrationError(
            "no migrations found in the installed package: it was built without its SQL files"
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps: {versions}")
    return found


async def _applied(conn: Connection) -> dict[int, str]:
    exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
    if not exists:
        return {}
    rows = await conn.fetch("select version, checksum from schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def _check(applied: dict[int, str], known: list[Migration]) -> list[Migration]:
    by_version = {m.version: m for m in known}
    unknown = sorted(set(applied) - set(by_version))
    if unknown:
        raise MigrationError(
            f"the database has migrations this code does not know ({unknown}): "
            "it was migrated by a newer vpnbot"
        )
    for version, checksum in applied.items():
        if by_version[version].checksum != checksum:
            raise MigrationError(
                f"migration {by_version[version].label} changed after it was applied"
            )
    return [m for m in known if m.version not in applied]


async def pending_migrations(db: Database) -> list[Migration]:
    """Migrations not yet applied; raises MigrationError when the history disagrees."""
    known = load_migrations()

    async def unit(conn: Connection) -> dict[int, str]:
        return await _applied(conn)

    return _check(await db.read(unit), known)


async def apply_migrations(db: Database) -> list[Migration]:
    """Apply what is pending, in order; returns what this call applied."""
    known = load_migrations()

    async def unit(conn: Connection) -> list[Migration]:
        await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(_TABLE)
            done = []
            for migration in _check(await _applied(conn), known):
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name, checksum)"
                        " values ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                done.append(migration)
            return done
        finally:
            await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)

    return await db.session(unit)
