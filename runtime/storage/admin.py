"""What admins see and change: statistics, user lookups, granted days. Broadcasts live
in ``broadcasts`` (their names are kept here for the callers that know them here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

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


MAX_NAME_QUERY = 64


async def search_by_name(db: Database, query: str, *, limit: int = 10) -> list[User]:
    """Users whose Telegram name contains ``query`` (any case), those whose name starts
    with it first, the most recently seen first; at most ``limit``."""
    text = " ".join(query.split())[:MAX_NAME_QUERY].lower()
    if len(text) < 2:
        return []
    pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

    async def unit(conn: Connection) -> list[User]:
        rows = await conn.fetch(
            f"select {_USER_COLUMNS} from users where lower(display_name) like '%' || $1 || '%'"
            " order by lower(display_name) like $1 || '%' desc, updated_at desc limit $2",
            pattern,
            limit,
        )
        return [_user(r) for r in rows]

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


# -- broadcasts: in ``broadcasts``, named here as before ----------------------------------

from .broadcasts import (  # noqa: E402
    BLOCKED_ERROR,
    BROADCAST_TEMPLATE,
    Broadcast,
    BroadcastProgress,
    broadcast_progress,
    cancel_broadcast,
    create_broadcast,
    finish_broadcast,
    get_broadcast,
    sending_broadcasts,
    start_broadcast,
)
from .broadcasts import prefix as broadcast_prefix  # noqa: E402

__all__ = [
    "BLOCKED_ERROR",
    "BROADCAST_TEMPLATE",
    "Broadcast",
    "BroadcastProgress",
    "DaysAdjusted",
    "Revenue",
    "Statistics",
    "UserCard",
    "adjust_days",
    "broadcast_prefix",
    "broadcast_progress",
    "cancel_broadcast",
    "create_broadcast",
    "find_user",
    "finish_broadcast",
    "get_broadcast",
    "sending_broadcasts",
    "start_broadcast",
    "statistics",
]
