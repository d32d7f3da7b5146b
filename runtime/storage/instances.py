"""One live process per instance id: a session advisory lock on a connection of its own.

Lease holders and claim owners are named after the instance id, so that a restart takes
over what its dead predecessor held at once instead of waiting for leases and claims to
expire. That is safe only while no two live processes use one id. The process that uses
an id holds a session advisory lock keyed by it; PostgreSQL releases the lock the moment
the session ends, and a killed process's session ends when the kernel closes its socket,
so a restart finds the lock free.

A lock that is taken does not say whether its holder is alive: a client that vanished
without closing its socket (a host that lost power) leaves a session behind until TCP
keepalives end it (set short on this connection: about half a minute). So the holder
pings on its session every ``PING_SECONDS``, and a contender watches the session in
``pg_stat_activity``: a ping seen means a live process uses the id.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import trio

from runtime.bridge import run_asyncio
from runtime.failures import InfraError

from ._database import Connection, Database, close_session

PING_SECONDS = 10.0
"""How often the holder's session shows that it is alive: a few times within a contender's
patience (``runtime.app``: 40 s), and a small part of an idle service's transactions."""
KEEPALIVE = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
"""The server drops the session of a client that vanished within about 25 s (TCP only)."""


def lock_key(instance_id: str) -> int:
    """The advisory lock key of an instance id (64 bits of a keyed hash)."""
    digest = hashlib.blake2b(
        instance_id.encode(), digest_size=8, person=b"vpnbot-instance"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Holder:
    """The session holding an instance id's lock, as ``pg_stat_activity`` shows it."""

    backend_pid: int
    application_name: str
    client: str | None
    connected_at: datetime | None
    last_active: datetime | None
    """When the session last changed state (a ping does); None if we may not see it."""

    def describe(self) -> str:
        where = f" from {self.client}" if self.client else ""
        since = f", connected since {self.connected_at:%Y-%m-%d %H:%M:%S%z}"
        return (
            f"{self.application_name or 'a session'} (PostgreSQL backend "
            f"{self.backend_pid}{where}{since if self.connected_at else ''})"
        )


_HOLDER = """
select a.pid, a.application_name, a.client_addr::text as client, a.backend_start,
       a.state_change
from pg_locks l join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted and l.objsubid = 1
  and l.classid = $1::bigint::oid and l.objid = $2::bigint::oid
  and l.database = (select oid from pg_database where datname = current_database())
"""


class InstanceLock:
    """This process's hold on one instance id.

    ``try_acquire`` opens the session and takes the lock if it is free; ``ping`` keeps
    the session visibly alive (and fails when it is gone: take the lock again);
    ``close`` gives the id up.
    """

    def __init__(self, db: Database, instance_id: str) -> None:
        self.db = db
        self.instance_id = instance_id
        self.key = lock_key(instance_id)
        self.tag = secrets.token_hex(4)
        """Tells this process's own sessions apart from anyone else's."""
        label = f"vpnbot {self.tag} pid {os.getpid()}@{socket.gethostname()}"
        self.label = label[:63]  # PostgreSQL keeps 63 bytes of an application name
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        """Take the lock on a fresh session if it is free; False while a session holds it.

        A session of this very process that outlived its connection (a network cut the
        server has not noticed yet) is ended first: it is certainly not a live holder.
        """
        await self.close()
        conn = await self.db.open_session(
            server_settings={"application_name": self.label, **KEEPALIVE}
        )
        try:
            got = await self._try_lock(conn)
            if not got and await self._end_own_stale_session():
                got = await self._try_lock(conn)
        except BaseException:
            await close_session(conn)
            raise
        if not got:
            await close_session(conn)
            return False
        self._conn = conn
        return True

    async def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody, or a session we may not see)."""
        unsigned = self.key & 0xFFFF_FFFF_FFFF_FFFF

        async def unit(conn: Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(_HOLDER, unsigned >> 32, unsigned & 0xFFFF_FFFF)

        row = await self.db.read(unit)
        if row is None:
            return None
        return Holder(
            backend_pid=row["pid"],
            application_name=row["application_name"] or "",
            client=row["client"],
            connected_at=row["backend_start"],
            last_active=row["state_change"],
        )

    async def ping(self, timeout: float = 2 * PING_SECONDS) -> None:  # noqa: ASYNC109
        """Show the session alive; raises ``InfraError`` when it is gone or hangs."""
        conn = self._conn
        if conn is None:
            raise InfraError("the instance lock is not held")
        try:
            with trio.fail_after(timeout):
                await run_asyncio(conn.fetchval, "select 1")
        except (trio.TooSlowError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await self.close()
            raise InfraError(f"the instance lock's session is gone: {exc!r}") from exc

    async def close(self) -> None:
        """Give the id up (closing the session releases the lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_session(conn)

    async def _end_own_stale_session(self) -> bool:
        holder = await self.holder()
        if holder is None or not holder.application_name.startswith(f"vpnbot {self.tag} "):
            return False

        async def unit(conn: Connection) -> bool:
            return bool(await conn.fetchval("select pg_terminate_backend($1)", holder.backend_pid))

        ended = await self.db.transaction(unit)
        if ended:  # the lock goes with the backend, a moment after the signal
            with trio.move_on_after(5):
                while await self.holder() is not None:  # noqa: ASYNC110 - another process
                    await trio.sleep(0.05)
        return ended

    async def _try_lock(self, conn: asyncpg.Connection[asyncpg.Record]) -> bool:
        return bool(await run_asyncio(conn.fetchval, "select pg_try_advisory_lock($1)", self.key))
