"""Leases: work that runs in one place at a time, across processes and hosts.

A lease is a row with a holder, an expiry and a fencing token. Every expiry is judged on
the database's clock, never a process's. A holder renews before the expiry; a holder that
stops renewing (killed, partitioned, stuck) loses the lease once it expires, and the next
holder gets a higher token.

A holder name is stable: the instance id and the role (``"vpn-1:notifier"``), the same
after a restart. Acquiring a lease that the same holder name still holds takes it over at
once, with a new token: that is a restart of the instance taking back what its dead
predecessor held, without waiting for the expiry, while any other holder still waits. It is
safe because one instance id belongs to one live process at a time (``instances``), and
the new token fences out anything the old tenure would still write. Only ``renew`` keeps a
token.

Knowing that you held the lease a moment ago is not enough to write safely: a process can
pause for longer than the ttl. Units of work that write under a lease call ``check_fence``
first, inside the same transaction: it locks the lease row ``FOR SHARE`` after checking the
holder, the token and the expiry, so no one can take the lease over until the writing
transaction ends, and a holder that lost it gets ``LeaseLost`` and writes nothing.

``LeaseKeeper.held()`` is the helper for actors: it waits for the lease, renews it in the
background every ttl/3 and cancels the body when the lease is lost.

Releasing keeps the row (its expiry moves to the past): the token must never go back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import trio

from runtime.failures import DomainError
from runtime.logs import get_logger

from ._database import Connection, Database

_log = get_logger("leases")


class LeaseLost(DomainError):
    """The lease is no longer this holder's: it expired, was released or was taken over.

    A domain error, not an infrastructure one: the database works, and repeating the same
    write with the same lease can never succeed (so nothing retries it). Losing a lease is
    an expected event when several instances run; the holder stops the work it guarded.
    """


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    token: int
    """The fencing token: grows with every new holder, kept by renewals."""
    expires_at: datetime
    """On the database's clock, as of the last acquire or renew."""
    ttl_seconds: float


def _ttl(seconds: float) -> timedelta:
    if seconds <= 0:
        raise ValueError("a lease ttl must be positive")
    return timedelta(seconds=seconds)


_ACQUIRE = """
insert into leases as l (name, holder, fencing_token, expires_at, acquired_at, renewed_at)
values ($1, $2, 1, now() + $3::interval, now(), now())
on conflict (name) do update set
    fencing_token = l.fencing_token + 1,
    acquired_at = now(),
    holder = excluded.holder,
    expires_at = excluded.expires_at,
    renewed_at = now()
where l.expires_at <= now() or l.holder = excluded.holder
returning fencing_token, expires_at
"""


async def acquire(db: Database, name: str, holder: str, ttl_seconds: float) -> Lease | None:
    """Start a tenure of the lease ``name`` for ``ttl_seconds``, with a new token, if it is
    free, expired or held under this ``holder`` name (a restart taking over its own lease);
    None while another holder has it. Keep a tenure with ``renew``."""
    ttl = _ttl(ttl_seconds)

    async def unit(conn: Connection) -> tuple[int, datetime] | None:
        row = await conn.fetchrow(_ACQUIRE, name, holder, ttl)
        return None if row is None else (row["fencing_token"], row["expires_at"])

    got = await db.transaction(unit)
    if got is None:
        return None
    return Lease(name, holder, got[0], got[1], ttl_seconds)


async def renew(db: Database, lease: Lease) -> Lease | None:
    """Extend the lease by its ttl from now; None when it was lost (expired, released or
    taken over): stop the work it guards."""
    ttl = _ttl(lease.ttl_seconds)

    async def unit(conn: Connection) -> datetime | None:
        expires: datetime | None = await conn.fetchval(
            "update leases set expires_at = now() + $4::interval, renewed_at = now()"
            " where name = $1 and holder = $2 and fencing_token = $3 and expires_at > now()"
            " returning expires_at",
            lease.name,
            lease.holder,
            lease.token,
            ttl,
        )
        return expires

    expires_at = await db.transaction(unit)
    if expires_at is None:
        return None
    return Lease(lease.name, lease.holder, lease.token, expires_at, lease.ttl_seconds)


async def release(db: Database, lease: Lease) -> bool:
    """Give the lease up now (the row and its token stay); False if it was not ours any more."""

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update leases set expires_at = '-infinity', renewed_at = now()"
            " where name = $1 and holder = $2 and fencing_token = $3 returning 1",
            lease.name,
            lease.holder,
            lease.token,
        )
        return row is not None

    return await db.transaction(unit)


async def check_fence(conn: Connection, lease: Lease) -> None:
    """Inside a writing unit of work: raise ``LeaseLost`` unless ``lease`` is still current.

    Locks the lease row ``FOR SHARE`` until the transaction ends, so the lease cannot change
    hands while the unit writes. Not for ``Database.read`` units (read-only transactions
    cannot lock rows).
    """
    valid = await conn.fetchval(
        "select expires_at > clock_timestamp() from leases"
        " where name = $1 and holder = $2 and fencing_token = $3 for share",
        lease.name,
        lease.holder,
        lease.token,
    )
    if valid is None:
        raise LeaseLost(f"lease {lease.name!r} token {lease.token} was taken over or released")
    if not valid:
        raise LeaseLost(f"lease {lease.name!r} token {lease.token} expired")


class LeaseKeeper:
    """Holds one lease for a block of work, renewing it in the background.

    ::

        keeper = LeaseKeeper(db, "telegram-polling", services.lease_holder("bot-poller"), 15)
        async with keeper.held() as lease:   # waits until the lease is ours
            await poll(lease)                # writes call check_fence(conn, lease)

    The body is cancelled when the lease is lost, and ``held()`` then raises ``LeaseLost``.
    Lost means: a renewal said so, or no renewal succeeded within the ttl of the last one
    (measured from when it was sent, so the local deadline falls before the database's).
    Transient renewal failures are retried until then. On exit the lease is released.
    """

    def __init__(
        self,
        db: Database,
        name: str,
        holder: str,
        ttl_seconds: float,
        *,
        renew_every: float | None = None,
        poll_every: float | None = None,
        release_timeout: float = 5.0,
    ) -> None:
        _ttl(ttl_seconds)
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self.renew_every = ttl_seconds / 3 if renew_every is None else renew_every
        self.poll_every = ttl_seconds / 3 if poll_every is None else poll_every
        self.release_timeout = release_timeout
        self.lease: Lease | None = None
        """The lease while ``held()`` runs its body, else None."""

    async def wait_acquire(self) -> tuple[Lease, float]:
        """Acquire, trying every ``poll_every`` seconds; returns the lease and the trio time
        until which it is surely still ours."""
        while True:
            sent = trio.current_time()
            lease = await acquire(self.db, self.name, self.holder, self.ttl_seconds)
            if lease is not None:
                return lease, sent + self.ttl_seconds
            await trio.sleep(self.poll_every)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[Lease]:
        """Wait for the lease, hold it while the body runs, release it after (one body at a
        time per keeper). Raises ``LeaseLost`` if the body was cut short by losing it."""
        lease, valid_until = await self.wait_acquire()
        self.lease = lease
        body = trio.CancelScope()
        lost: list[LeaseLost] = []
        error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep, lease, valid_until, body, lost)
                try:
                    with body:
                        yield lease
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The keeper raises nothing, so a one-member group is the body's own exception:
            # hand it on as it was raised, not wrapped.
            error = group.exceptions[0] if len(group.exceptions) == 1 else group
        finally:
            self.lease = None
        if not lost:
            await self._release(lease)
        if error is not None:
            raise error
        if lost and body.cancelled_caught:
            raise lost[0]

    async def _keep(
        self, lease: Lease, valid_until: float, body: trio.CancelScope, lost: list[LeaseLost]
    ) -> None:
        next_renewal = trio.current_time() + self.renew_every
        while True:
            await trio.sleep_until(min(next_renewal, valid_until))
            if trio.current_time() >= valid_until:
                reason = f"lease {lease.name!r} could not be renewed within its ttl"
                break
            sent = trio.current_time()
            renewed: Lease | None = None
            with trio.move_on_at(valid_until):
                try:
                    renewed = await renew(self.db, lease)
                except Exception as exc:
                    _log.warning(
                        "lease renewal failed, retrying",
                        operation="lease.renew",
                        outcome="failed",
                        lease=lease.name,
                        error=repr(exc),
                    )
                    next_renewal = trio.current_time() + min(self.renew_every, 0.5)
                    continue
                if renewed is None:
                    reason = f"lease {lease.name!r} token {lease.token} was lost"
                    break
                valid_until = sent + self.ttl_seconds
                next_renewal = sent + self.renew_every
                self.lease = renewed
        _log.warning("lease lost", operation="lease.renew", outcome="failed", lease=lease.name)
        lost.append(LeaseLost(reason))
        body.cancel()

    async def _release(self, lease: Lease) -> None:
        with trio.move_on_after(self.release_timeout) as scope:
            scope.shield = True
            try:
                await release(self.db, lease)
            except Exception as exc:  # it expires on its own anyway
                _log.warning(
                    "lease release failed; it will expire",
                    operation="lease.release",
                    outcome="failed",
                    lease=lease.name,
                    error=repr(exc),
                )
