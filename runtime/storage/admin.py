"""What admins see and change: statistics, user lookups, granted days, broadcasts.

Broadcast messages are outbox jobs (``telegram.notify``, template ``broadcast``) whose
dedup key is ``broadcast:<id>:<user>``: the transaction that starts a broadcast enqueues
every message, so a broadcast goes out whole or not at all and at most once per user,
and a restart simply lets the notifier carry on. Progress is read from the statuses of
those jobs, by dedup-key prefix:

- blocked: the job ended (done, skipped by the notifier, or dead) with a last error that
  says the user cannot be written to (blocked the bot, account deactivated: a 403);
- delivered: the job is done otherwise;
- failed: the job is dead for any other reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import grants, job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .payments import _COLUMNS as _PAYMENT_COLUMNS
from .payments import Payment
from .subscriptions import _COLUMNS as _SUBSCRIPTION_COLUMNS
from .subscriptions import Subscription
from .users import _COLUMNS as _USER_COLUMNS
from .users import User, lock_user

BROADCAST_TEMPLATE = "broadcast"
AUDIENCES = ("all", "active")
BLOCKED_ERROR = re.compile(r"blocked|forbidden|deactivated", re.IGNORECASE)
"""What a job's last error says when its user cannot be written to (the notifier's
"skipped: the user blocked the bot", a 403 "Forbidden: bot was blocked by the user")."""


# -- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revenue:
    provider: str
    currency: str
    today_minor: int
    week_minor: int
    month_minor: int
    month_count: int


@dataclass(frozen=True, slots=True)
class Statistics:
    users: int
    new_today: int
    new_week: int
    blocked: int
    active_paid: int
    active_trials: int
    trials_started: int
    revenue: tuple[Revenue, ...]
    refunds_month: int


_STATS_USERS = """
select count(*) as users,
       count(*) filter (where created_at >= date_trunc('day', now() at time zone 'UTC')
                                           at time zone 'UTC') as new_today,
       count(*) filter (where created_at >= now() - interval '7 days') as new_week,
       count(*) filter (where blocked_bot_at is not null) as blocked,
       count(*) filter (where trial_used_at is not null) as trials_started
from users
"""

_STATS_ACTIVE = """
select count(distinct user_id) filter (where kind = 'paid') as active_paid,
       count(distinct user_id) filter (where kind = 'trial') as active_trials
from subscriptions where status = 'active' and expires_at > now()
"""

_STATS_REVENUE = """
select provider, currency,
       coalesce(sum(amount_minor) filter (
           where finalized_at >= date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'
       ), 0) as today,
       coalesce(sum(amount_minor) filter (where finalized_at >= now() - interval '7 days'), 0)
           as week,
       coalesce(sum(amount_minor), 0) as month,
       count(*) as month_count
from payments
where status = 'finalized' and finalized_at >= now() - interval '30 days'
group by provider, currency
order by provider, currency
"""


async def statistics(db: Database) -> Statistics:
    """Users, active subscriptions, trials, and revenue (finalized payments, refunds
    excluded) per provider and currency for today (UTC), 7 and 30 days."""

    async def unit(conn: Connection) -> Statistics:
        people = await fetch_one(conn, _STATS_USERS)
        active = await fetch_one(conn, _STATS_ACTIVE)
        revenue = await conn.fetch(_STATS_REVENUE)
        refunds: int = await conn.fetchval(
            "select count(*) from payments where status = 'refunded'"
            " and refunded_at >= now() - interval '30 days'"
        )
        return Statistics(
            users=people["users"],
            new_today=people["new_today"],
            new_week=people["new_week"],
            blocked=people["blocked"],
            active_paid=active["active_paid"],
            active_trials=active["active_trials"],
            trials_started=people["trials_started"],
            revenue=tuple(
                Revenue(
                    provider=r["provider"],
                    currency=r["currency"],
                    today_minor=int(r["today"]),
                    week_minor=int(r["week"]),
                    month_minor=int(r["month"]),
                    month_count=int(r["month_count"]),
                )
                for r in revenue
            ),
            refunds_month=refunds,
        )

    return await db.read(unit)


# -- lookups -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserCard:
    user: User
    subscriptions: tuple[Subscription, ...]
    payments: tuple[Payment, ...]


def _user(row: asyncpg.Record) -> User:
    return User(**dict(row))


async def find_user(db: Database, query: str) -> UserCard | None:
    """A user by Telegram id or by username (``@name`` or ``name``, any case), with their
    latest subscriptions and payments."""
    text = query.strip()
    by_id = int(text) if re.fullmatch(r"-?\d{1,19}", text) else None
    username = text.removeprefix("@").lower()

    async def unit(conn: Connection) -> UserCard | None:
        if by_id is not None:
            row = await conn.fetchrow(
                f"select {_USER_COLUMNS} from users where telegram_id = $1", by_id
            )
        else:
            row = await conn.fetchrow(
                f"select {_USER_COLUMNS} from users where lower(username) = $1"
                " order by updated_at desc limit 1",
                username,
            )
        if row is None:
            return None
        user = _user(row)
        subscriptions = await conn.fetch(
            f"select {_SUBSCRIPTION_COLUMNS} from subscriptions where user_id = $1"
            " order by expires_at desc limit 5",
            user.telegram_id,
        )
        payments = await conn.fetch(
            f"select {_PAYMENT_COLUMNS} from payments where user_id = $1"
            " and status not in ('created', 'invoiced', 'expired')"
            " order by created_at desc limit 8",
            user.telegram_id,
        )
        return UserCard(
            user,
            tuple(Subscription(**dict(r)) for r in subscriptions),
            tuple(Payment(**dict(r)) for r in payments),
        )

    if by_id is None and not re.fullmatch(r"[A-Za-z0-9_]{1,64}", username):
        return None
    return await db.read(unit)


# -- granting and taking days --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaysAdjusted:
    subscription: Subscription | None
    """The subscription changed (or created); None when there was nothing to shorten."""
    revoked: bool
    """Shortening left no time: the subscription was revoked."""
    repeated: bool = False
    """This operation was applied before (a handler ran twice): nothing changed now."""


async def adjust_days(
    db: Database,
    user_id: int,
    days: int,
    *,
    operation_key: str,
    backend: str,
    actor: str = grants.SYSTEM,
    reason: str | None = None,
    max_attempts: int = 10,
) -> DaysAdjusted | None:
    """Grant (``days`` > 0) or take back (``days`` < 0) days of the user's active
    subscription, and queue the panel update (ACTIVATE) or the revocation (REVOKE) in the
    same transaction. Granting to a user with no active subscription starts one on
    ``backend``. Granting extends from max(now, expiry); taking never goes below the start.

    ``operation_key`` makes it safe to run twice (a handler retried after a crash): it is
    the dedup key of the queued job and the audit entry's grant key, so a second run finds
    it and changes nothing. Returns None for an unknown user.
    """
    if days == 0:
        raise ValueError("days must not be zero")
    key = f"admin:{operation_key}"
    delta = timedelta(days=abs(days))

    async def unit(conn: Connection) -> DaysAdjusted | None:
        if await lock_user(conn, user_id) is None:
            return None
        seen = await conn.fetchval("select payload from outbox where dedup_key = $1", key)
        if seen is not None:
            current = await conn.fetchrow(
                f"select {_SUBSCRIPTION_COLUMNS} from subscriptions where id = $1",
                seen.get("subscription_id"),
            )
            sub = Subscription(**dict(current)) if current else None
            return DaysAdjusted(
                sub, revoked=sub is not None and sub.status == "revoked", repeated=True
            )
        current = await conn.fetchrow(
            f"select {_SUBSCRIPTION_COLUMNS} from subscriptions where user_id = $1"
            " and status = 'active' and expires_at > now()"
            " order by (kind = 'paid') desc, expires_at desc limit 1 for update",
            user_id,
        )
        if days > 0:
            row = await grants.extend_or_start(conn, user_id, delta, backend)
            revoked = False
        elif current is None:
            return DaysAdjusted(None, revoked=False)
        else:
            row = await fetch_one(
                conn,
                "update subscriptions set"
                " status = case when expires_at - $2::interval <= now() then 'revoked'"
                " else status end,"
                " expires_at = greatest(expires_at - $2::interval,"
                " starts_at + interval '1 second'),"
                " activation_status = case when expires_at - $2::interval <= now()"
                " then activation_status else 'pending' end,"
                " updated_at = now()"
                f" where id = $1 returning {_SUBSCRIPTION_COLUMNS}",
                current["id"],
                delta,
            )
            revoked = row["status"] == "revoked"
        subscription = Subscription(**dict(row))
        await grants.note(
            conn,
            actor=actor,
            action="days.grant" if days > 0 else "days.take",
            user_id=user_id,
            key=key,
            days=days,
            reason=reason,
            details={"subscription_id": subscription.id, "revoked": revoked},
        )
        await enqueue(
            conn,
            kind=job_kinds.REVOKE if revoked else job_kinds.ACTIVATE,
            dedup_key=key,
            payload={"subscription_id": subscription.id},
            max_attempts=max_attempts,
        )
        return DaysAdjusted(subscription, revoked=revoked)

    return await db.transaction(unit)


# -- broadcasts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    id: int
    created_by: int
    audience: str
    text: str
    status: str
    total: int
    report_chat_id: int | None
    report_message_id: int | None
    created_at: datetime
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class BroadcastProgress:
    total: int
    pending: int
    delivered: int
    blocked: int
    failed: int

    @property
    def done(self) -> bool:
        return self.pending == 0


_BROADCAST_COLUMNS = (
    "id, created_by, audience, text, status, total, report_chat_id, report_message_id,"
    " created_at, started_at"
)

_AUDIENCE = {
    "all": "select telegram_id from users where blocked_bot_at is null and banned_at is null",
    "active": (
        "select telegram_id from users u where blocked_bot_at is null and banned_at is null"
        " and exists ("
        " select 1 from subscriptions s where s.user_id = u.telegram_id"
        " and s.status = 'active' and s.expires_at > now())"
    ),
}


def broadcast_prefix(broadcast_id: int) -> str:
    return f"broadcast:{broadcast_id}:"


def _broadcast(row: asyncpg.Record) -> Broadcast:
    return Broadcast(**dict(row))


def _audience(audience: str) -> str:
    try:
        return _AUDIENCE[audience]
    except KeyError:
        raise ValueError(f"audience must be one of {AUDIENCES}") from None


async def create_broadcast(
    db: Database, *, created_by: int, audience: str, text: str
) -> tuple[Broadcast, int]:
    """A draft broadcast and how many users it would reach now."""
    source = _audience(audience)

    async def unit(conn: Connection) -> tuple[Broadcast, int]:
        row = await fetch_one(
            conn,
            "insert into broadcasts (created_by, audience, text) values ($1, $2, $3)"
            f" returning {_BROADCAST_COLUMNS}",
            created_by,
            audience,
            text,
        )
        reach: int = await conn.fetchval(f"select count(*) from ({source}) a")
        return _broadcast(row), reach

    return await db.transaction(unit)


async def get_broadcast(db: Database, broadcast_id: int) -> Broadcast | None:
    async def unit(conn: Connection) -> Broadcast | None:
        row = await conn.fetchrow(
            f"select {_BROADCAST_COLUMNS} from broadcasts where id = $1", broadcast_id
        )
        return _broadcast(row) if row else None

    return await db.read(unit)


async def start_broadcast(
    db: Database,
    broadcast_id: int,
    *,
    report_chat_id: int,
    report_message_id: int | None,
    max_attempts: int = 8,
) -> Broadcast | None:
    """Start a draft: enqueue one message per user of its audience, in one transaction.

    Safe to run twice: a broadcast already started is returned as it is. None when there
    is no such broadcast or it was cancelled.
    """

    async def unit(conn: Connection) -> Broadcast | None:
        row = await conn.fetchrow(
            "update broadcasts set status = 'sending', started_at = now(),"
            " report_chat_id = $2, report_message_id = $3"
            f" where id = $1 and status = 'draft' returning {_BROADCAST_COLUMNS}",
            broadcast_id,
            report_chat_id,
            report_message_id,
        )
        if row is None:
            existing = await conn.fetchrow(
                f"select {_BROADCAST_COLUMNS} from broadcasts where id = $1", broadcast_id
            )
            if existing is None or existing["status"] == "cancelled":
                return None
            return _broadcast(existing)
        broadcast = _broadcast(row)
        source = _audience(broadcast.audience)
        inserted = await conn.fetch(
            "insert into outbox (kind, dedup_key, payload, max_attempts)"
            " select $1, $2 || a.telegram_id, jsonb_build_object("
            "   'chat_id', a.telegram_id, 'template', $3::text, 'broadcast_id', $4::bigint,"
            "   'params', jsonb_build_object('text', $5::text)), $6"
            f" from ({source}) a order by a.telegram_id"
            " on conflict (dedup_key) do nothing returning id",
            job_kinds.NOTIFY,
            broadcast_prefix(broadcast.id),
            BROADCAST_TEMPLATE,
            broadcast.id,
            broadcast.text,
            max_attempts,
        )
        total = await fetch_one(
            conn,
            f"update broadcasts set total = $2 where id = $1 returning {_BROADCAST_COLUMNS}",
            broadcast.id,
            len(inserted),
        )
        return _broadcast(total)

    return await db.transaction(unit)


async def cancel_broadcast(db: Database, broadcast_id: int) -> int | None:
    """Cancel a draft, or stop one being sent: its messages not sent yet are dropped
    (dead-lettered as cancelled). Returns how many were dropped, None if already over."""

    async def unit(conn: Connection) -> int | None:
        status = await conn.fetchval(
            "update broadcasts set status = 'cancelled', finished_at = now() where id = $1"
            " and status in ('draft', 'sending') returning status",
            broadcast_id,
        )
        if status is None:
            return None
        dropped = await conn.fetch(
            "update outbox set status = 'dead', last_error = 'broadcast cancelled',"
            " claimed_by = null, claim_expires_at = null, updated_at = now()"
            " where dedup_key like $1 || '%' and status = 'pending' returning id",
            broadcast_prefix(broadcast_id),
        )
        return len(dropped)

    return await db.transaction(unit)


_PROGRESS = """
select count(*) as total,
       count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status <> 'pending' and blocked) as blocked,
       count(*) filter (where status = 'done' and not blocked) as delivered,
       count(*) filter (where status = 'dead' and not blocked) as failed
from (
    select status, coalesce(last_error ~* $2, false) as blocked
    from outbox where dedup_key like $1 || '%'
) o
"""


async def broadcast_progress(db: Database, broadcast_id: int) -> BroadcastProgress:
    async def unit(conn: Connection) -> BroadcastProgress:
        row = await fetch_one(
            conn,
            _PROGRESS,
            broadcast_prefix(broadcast_id),
            BLOCKED_ERROR.pattern,
        )
        return BroadcastProgress(
            total=row["total"],
            pending=row["pending"],
            delivered=row["delivered"],
            blocked=row["blocked"],
            failed=row["failed"],
        )

    return await db.read(unit)


async def sending_broadcasts(db: Database) -> list[Broadcast]:
    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(
            f"select {_BROADCAST_COLUMNS} from broadcasts where status = 'sending' order by id"
        )

    return [_broadcast(row) for row in await db.read(unit)]


async def finish_broadcast(db: Database, broadcast_id: int, progress: BroadcastProgress) -> bool:
    """Record the final count; True for the one caller that finished it."""

    async def unit(conn: Connection) -> bool:
        row = await conn.fetchval(
            "update broadcasts set status = 'finished', finished_at = now(), delivered = $2,"
            " blocked = $3, failed = $4 where id = $1 and status = 'sending' returning 1",
            broadcast_id,
            progress.delivered,
            progress.blocked,
            progress.failed,
        )
        return row is not None

    return await db.transaction(unit, retry=True)
