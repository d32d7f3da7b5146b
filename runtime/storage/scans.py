"""Units of work of the background workers: due-row scans and the lookups around them.

Every scan reads a range of a partial index (what is due), never the table:

- open invoices of a provider, in keyset pages (``payments_open``);
- a provider's recent unfinished intents, for reconciliation (``payments_open`` and
  ``payments_expired``);
- the activation and revocation jobs that just failed, per VPN backend, and holding or
  releasing the jobs of a backend that is down (``outbox_claim``: the pending backlog);
- users' own notifications before a broadcast's (``outbox_notify_direct``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import LAZY_COMMIT, LOST_CLAIM, Job, claim_is_current

# -- payments ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """An intent waiting for payment on an invoice the provider knows by ``external_id``."""

    id: str
    external_id: str
    created_at: datetime

    @property
    def position(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)


async def open_invoice_page(
    db: Database, provider: str, *, after: tuple[datetime, str] | None = None, limit: int = 1000
) -> list[OpenInvoice]:
    """Open invoices of ``provider`` with an external id, oldest first, after ``after``
    (the ``position`` of the last one of the previous page)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    query = (
        "select id::text as id, external_id, created_at from payments"
        " where provider = $1 and status in ('created', 'invoiced') and external_id is not null"
    )

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        if after is None:
            return await conn.fetch(query + " order by created_at, id limit $2", provider, limit)
        return await conn.fetch(
            query + " and created_at >= $2 and (created_at, id) > ($2, $3)"
            " order by created_at, id limit $4",
            provider,
            after[0],
            uuid.UUID(after[1]),
            limit,
        )

    return [OpenInvoice(r["id"], r["external_id"], r["created_at"]) for r in await db.read(unit)]


@dataclass(frozen=True, slots=True)
class UnfinishedIntent:
    id: str
    external_id: str | None
    status: str
    created_at: datetime

    @property
    def lookup_id(self) -> str:
        """What the provider knows it by: its invoice id, or (for invoices sent in the chat,
        which have no id before they are paid) the intent id, its payload."""
        return self.external_id or self.id


# One arm per partial index: open intents (payments_open), expired ones (payments_expired).
_UNFINISHED = """
(select id::text as id, external_id, status, created_at from payments
 where provider = $1 and status in ('created', 'invoiced')
   and created_at > now() - $2::interval and created_at <= now() - $3::interval
 order by created_at desc limit $4)
union all
(select id::text as id, external_id, status, created_at from payments
 where provider = $1 and status = 'expired'
   and created_at > now() - $2::interval and created_at <= now() - $3::interval
 order by created_at desc limit $4)
order by created_at desc
limit $4
"""


async def unfinished_intents(
    db: Database,
    provider: str,
    *,
    within: timedelta,
    older_than: timedelta = timedelta(0),
    limit: int = 10_000,
) -> list[UnfinishedIntent]:
    """Intents of ``provider`` created within ``within`` (but at least ``older_than`` ago)
    that were never credited: open, or expired here (a provider may still take the money
    after our intent expired). Newest first."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(_UNFINISHED, provider, within, older_than, limit)

    return [
        UnfinishedIntent(r["id"], r["external_id"], r["status"], r["created_at"])
        for r in await db.read(unit)
    ]


# -- VPN jobs per backend ------------------------------------------------------------------

VPN_JOB_KINDS = (job_kinds.ACTIVATE, job_kinds.REVOKE)


@dataclass(frozen=True, slots=True)
class BackendFailures:
    backend: str
    failures: int
    last_error: str


async def recent_failures(
    db: Database, *, within_seconds: float, kinds: Sequence[str] = VPN_JOB_KINDS
) -> list[BackendFailures]:
    """Per VPN backend: the jobs of ``kinds`` whose last attempt failed within the last
    ``within_seconds`` and wait to be tried again. Reads the pending backlog only."""

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "select s.vpn_backend as backend, count(*) as failures,"
            " (array_agg(o.last_error order by o.updated_at desc))[1] as last_error"
            " from outbox o"
            " join subscriptions s on s.id = (o.payload ->> 'subscription_id')::bigint"
            " where o.kind = any($1::text[]) and o.status = 'pending' and o.claimed_by is null"
            " and o.last_error is not null"
            " and o.updated_at >= now() - make_interval(secs => $2)"
            " group by s.vpn_backend order by s.vpn_backend",
            list(kinds),
            within_seconds,
        )

    return [
        BackendFailures(r["backend"], int(r["failures"]), r["last_error"] or "")
        for r in await db.read(unit)
    ]


async def hold_backend_jobs(
    db: Database, backends: Iterable[str], *, seconds: float, kinds: Sequence[str] = VPN_JOB_KINDS
) -> int:
    """Keep the unclaimed jobs of ``backends`` from being claimed for ``seconds`` (their
    panel is down: trying them would only spend their attempts). Returns how many."""
    names = sorted(set(backends))
    if not names:
        return 0

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "update outbox o set next_attempt_at ="
            " greatest(o.next_attempt_at, now() + make_interval(secs => $3))"
            " from subscriptions s"
            " where o.kind = any($1::text[]) and o.status = 'pending' and o.claimed_by is null"
            " and s.id = (o.payload ->> 'subscription_id')::bigint and s.vpn_backend = any($2)"
            " returning o.id",
            list(kinds),
            names,
            seconds,
        )

    return len(await db.transaction(unit, retry=True))


async def release_backend_jobs(
    db: Database, backends: Iterable[str], *, kinds: Sequence[str] = VPN_JOB_KINDS
) -> int:
    """Make every waiting job of ``backends`` due now (their panel is back: the backlog
    drains at once instead of after each job's backoff). Returns how many."""
    names = sorted(set(backends))
    if not names:
        return 0

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "update outbox o set next_attempt_at = now()"
            " from subscriptions s"
            " where o.kind = any($1::text[]) and o.status = 'pending' and o.claimed_by is null"
            " and o.next_attempt_at > now()"
            " and s.id = (o.payload ->> 'subscription_id')::bigint and s.vpn_backend = any($2)"
            " returning o.id",
            list(kinds),
            names,
        )

    return len(await db.transaction(unit, retry=True))


# -- notifications -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    chat_id: int
    language: str
    blocked: bool
    banned: bool = False
    """Banned by an admin: only receipts for their money reach them."""


async def recipients(db: Database, chat_ids: Iterable[int]) -> dict[int, Recipient]:
    """Language, blocked and banned flags of the users among ``chat_ids`` (admin chats
    that are not users are left out)."""
    wanted = sorted(set(chat_ids))
    if not wanted:
        return {}

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "select telegram_id, language, blocked_bot_at is not null as blocked,"
            " banned_at is not null as banned from users where telegram_id = any($1::bigint[])",
            wanted,
        )

    return {
        r["telegram_id"]: Recipient(r["telegram_id"], r["language"], r["blocked"], r["banned"])
        for r in await db.read(unit)
    }


# The partial index outbox_notify_direct matches these literal predicates (a parameter
# would keep the planner from proving that the index applies). Lost claims are counted as
# in ``outbox.claim``, and like its claims this one commits without waiting for the disk.
_CLAIM_DIRECT = f"""
with due as materialized (
    select id
    from outbox
    where status = 'pending' and kind = 'telegram.notify' and dedup_key not like 'broadcast:%'
      and next_attempt_at <= now()
      and lost_claims + {LOST_CLAIM} < max_attempts{LAZY_COMMIT}
    order by next_attempt_at, id
    limit $1
    for update skip locked
)
update outbox o
set attempts = o.attempts - (o.claimed_by is not null)::int + 1, claims = o.claims + 1,
    lost_claims = o.lost_claims + {LOST_CLAIM}, claimed_by = $2,
    claim_expires_at = now() + $3::interval, next_attempt_at = now() + $3::interval,
    started_at = case when $4 then now() end, updated_at = now()
where o.id = any(array(select id from due))
returning o.id, o.kind, o.dedup_key, o.payload, o.attempts, o.max_attempts, o.claimed_by,
          o.claim_expires_at, o.claims, o.steps_done
"""


async def claim_direct_notifications(
    db: Database, *, owner: str, limit: int, claim_seconds: float, started: bool = True
) -> list[Job]:
    """Claim due notifications that are not part of a broadcast, exactly as
    ``outbox.claim`` does (same fencing, same claim expiry, same lost claims). Jobs whose
    worker died running them too often are left to ``outbox.claim``, which dead-letters
    them."""
    if job_kinds.NOTIFY != "telegram.notify":  # pragma: no cover - guards the literal above
        raise AssertionError("the NOTIFY job kind changed: update _CLAIM_DIRECT and 0002")
    if limit < 1:
        raise ValueError("limit must be at least 1")

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            _CLAIM_DIRECT, limit, owner, timedelta(seconds=claim_seconds), started
        )

    rows = await db.statement(unit)
    return sorted(
        (
            Job(
                id=r["id"],
                kind=r["kind"],
                dedup_key=r["dedup_key"],
                payload=r["payload"],
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
                claimed_by=r["claimed_by"],
                claim_expires_at=r["claim_expires_at"],
                claim=r["claims"],
                steps_done=r["steps_done"],
            )
            for r in rows
        ),
        key=lambda j: j.id,
    )


async def complete_skipped(
    db: Database, jobs: Sequence[Job], *, owner: str, reason: str
) -> frozenset[int]:
    """Mark claimed jobs done without doing them (the user blocked the bot), keeping
    ``reason`` as their last error; fenced like ``outbox.complete``."""
    if not jobs:
        return frozenset()

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            "update outbox o set status = 'done', done_at = now(), updated_at = now(),"
            " claim_expires_at = null, last_error = $4"
            f" where {claim_is_current(ids=1, claims=2, owner=3)} returning o.id",
            [j.id for j in jobs],
            [j.claim for j in jobs],
            owner,
            reason[:4000],
        )

    return frozenset(r["id"] for r in await db.statement(unit))


# -- when work is next due ------------------------------------------------------------------
# A worker woken by notifications still has to look when work becomes due with the clock
# alone (a retry's backoff, a claim that expires, a subscription that ends): these say when.


async def next_job_due(db: Database, kinds: Sequence[str]) -> float | None:
    """Seconds until the earliest pending job of ``kinds`` is due (0 or less: due now; a
    claimed job counts from its claim's expiry); None when none is pending. One index
    probe per kind (``outbox_claim``)."""

    async def unit(conn: Connection) -> float | None:
        value = await conn.fetchval(
            "select extract(epoch from min(due) - now())::float8 from unnest($1::text[]) as k,"
            " lateral (select next_attempt_at as due from outbox"
            "  where status = 'pending' and kind = k order by next_attempt_at limit 1) as d",
            list(kinds),
        )
        return None if value is None else float(value)

    return await db.read(unit)


async def next_expiry_work(db: Database, *, retention: timedelta) -> float | None:
    """Seconds until the expiry cleanup has work: the earliest expiry of an active
    subscription, or the end of a revoked account's ``retention``; None when neither
    exists. Reads the first row of two partial indexes."""

    async def unit(conn: Connection) -> float | None:
        value = await conn.fetchval(
            "select extract(epoch from least("
            " (select min(expires_at) from subscriptions where status = 'active'),"
            " (select min(revoked_at) + $1::interval from subscriptions"
            "  where activation_status = 'revoked')) - now())::float8",
            retention,
        )
        return None if value is None else float(value)

    return await db.read(unit)


async def payment_watch_due(db: Database) -> tuple[bool, float | None]:
    """Whether any open intent has an invoice id (the payment watcher polls its provider),
    and seconds until the first open intent expires (None: none is open)."""

    async def unit(conn: Connection) -> tuple[bool, float | None]:
        row = await fetch_one(
            conn,
            "select exists (select 1 from payments where status in ('created', 'invoiced')"
            "  and external_id is not null) as polling,"
            " extract(epoch from (select min(expires_at) from payments"
            "  where status in ('created', 'invoiced')) - now())::float8 as expiry_in",
        )
        expiry_in = row["expiry_in"]
        return bool(row["polling"]), None if expiry_in is None else float(expiry_in)

    return await db.read(unit)
