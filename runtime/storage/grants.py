"""Grants of days and money, each exactly once, each written to the audit log.

Every grant (a trial, a referral reward, a promo code, an admin's gift) writes its
``audit_log`` row first, under a ``grant_key`` that names it for good (``promo:<code>:
<user>``, ``referral:<payment>:<level>``). The key is unique in the database: the first
writer gets the row and goes ahead in the same transaction; any other (a retry, a
duplicate update, a second process, a run after a crash) finds it taken and changes
nothing. Actions that grant nothing (an admin blocking a user) are written with ``note``.

The log is append-only (the database refuses ``UPDATE``, ``DELETE`` and ``TRUNCATE``):
taking a grant back is a grant of its own, with a key of its own.

The ``Connection``-level functions run inside the caller's unit of work, so a grant
commits with the state change it belongs to, or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from . import job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .subscriptions import _COLUMNS as _SUBSCRIPTION_COLUMNS
from .subscriptions import Subscription, Terms, account_name, extend_or_create

SYSTEM = "system"
"""The actor of grants nobody asked for by hand (rewards, trials)."""

GRANT_PLAN_ID = "grant"
"""The plan id of a subscription created by a grant of days."""

MAX_REASON = 500


def admin_actor(telegram_id: int) -> str:
    return f"admin:{telegram_id}"


def user_actor(telegram_id: int) -> str:
    return f"user:{telegram_id}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    user_id: int | None
    action: str
    grant_key: str | None
    days: int | None
    balance_delta_minor: int | None
    reason: str | None
    details: dict[str, Any]


_AUDIT_COLUMNS = (
    "id, at, actor, user_id, action, grant_key, days, balance_delta_minor, reason, details"
)


def _entry(row: asyncpg.Record) -> AuditEntry:
    values = dict(row)
    details = values["details"]
    values["details"] = json.loads(details) if isinstance(details, str) else dict(details)
    return AuditEntry(**values)


async def note(
    conn: Connection,
    *,
    actor: str,
    action: str,
    user_id: int | None = None,
    key: str | None = None,
    days: int | None = None,
    balance_delta_minor: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Append an entry; with ``key``, only if no entry holds it yet. True when written."""
    written = await conn.fetchval(
        "insert into audit_log"
        " (actor, user_id, action, grant_key, days, balance_delta_minor, reason, details)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
        " on conflict (grant_key) do nothing returning id",
        actor,
        user_id,
        action,
        key,
        days,
        balance_delta_minor,
        None if reason is None else reason[:MAX_REASON],
        json.dumps(details or {}),
    )
    return written is not None


async def grant_balance(
    conn: Connection,
    *,
    user_id: int,
    amount_minor: int,
    key: str,
    actor: str,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int | None:
    """Add ``amount_minor`` (> 0) to the balance once per ``key``; returns the new balance,
    or None when the key was granted before (nothing changes)."""
    if amount_minor <= 0:
        raise ValueError("a balance grant must be positive; take_balance takes")
    if not await note(
        conn,
        actor=actor,
        action=action,
        user_id=user_id,
        key=key,
        balance_delta_minor=amount_minor,
        reason=reason,
        details=details,
    ):
        return None
    row = await fetch_one(
        conn,
        "update users set balance_minor = balance_minor + $2, updated_at = now()"
        " where telegram_id = $1 returning balance_minor",
        user_id,
        amount_minor,
    )
    balance: int = row["balance_minor"]
    return balance


async def take_balance(
    conn: Connection,
    *,
    user_id: int,
    amount_minor: int,
    key: str,
    actor: str,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int | None:
    """Take up to ``amount_minor`` (> 0) once per ``key``: what the balance holds, never
    below zero (a reward already spent is not owed). Returns what was taken, or None when
    the key was used before. The audit entry records the amount actually taken."""
    if amount_minor <= 0:
        raise ValueError("the amount to take must be positive")
    held = await conn.fetchval(
        "select balance_minor from users where telegram_id = $1 for update", user_id
    )
    taken = min(int(held or 0), amount_minor)
    if not await note(
        conn,
        actor=actor,
        action=action,
        user_id=user_id,
        key=key,
        balance_delta_minor=-taken,
        reason=reason,
        details={**(details or {}), "asked_minor": amount_minor},
    ):
        return None
    if taken:
        await conn.execute(
            "update users set balance_minor = balance_minor - $2, updated_at = now()"
            " where telegram_id = $1",
            user_id,
            taken,
        )
    return taken


async def grant_days(
    conn: Connection,
    *,
    user_id: int,
    days: int,
    backend: str,
    key: str,
    actor: str,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    max_attempts: int = 10,
) -> Subscription | None:
    """Add ``days`` (> 0) to the user's active subscription (the paid one first), or start
    one on ``backend``, once per ``key``, and queue the panel update in the same
    transaction. Returns the subscription, or None when the key was granted before."""
    if days <= 0:
        raise ValueError("a grant of days must be positive")
    if not await note(
        conn,
        actor=actor,
        action=action,
        user_id=user_id,
        key=key,
        days=days,
        reason=reason,
        details=details,
    ):
        return None
    row = await extend_or_start(conn, user_id, timedelta(days=days), backend)
    return await _activated(conn, Subscription(**dict(row)), key, max_attempts)


async def grant_plan(
    conn: Connection,
    *,
    user_id: int,
    terms: Terms,
    key: str,
    actor: str,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    max_attempts: int = 10,
) -> Subscription | None:
    """Give the plan of ``terms`` for nothing, once per ``key``: what a purchase of it gives
    (``subscriptions.extend_or_create``: the paid subscription on its backend extended, a
    trial upgraded, or a new one, a new traffic period either way) with its activation
    job. Returns the subscription, or None when the key was granted before."""
    if not await note(
        conn,
        actor=actor,
        action=action,
        user_id=user_id,
        key=key,
        days=terms.duration.days,
        reason=reason,
        details={**(details or {}), "plan_id": terms.plan_id},
    ):
        return None
    subscription = await extend_or_create(conn, user_id, terms)
    return await _activated(conn, subscription, key, max_attempts)


async def _activated(
    conn: Connection, subscription: Subscription, key: str, max_attempts: int
) -> Subscription:
    """Queue the panel update of a grant's subscription, once per grant key."""
    await enqueue(
        conn,
        kind=job_kinds.ACTIVATE,
        dedup_key=f"grant:{key}",
        payload={"subscription_id": subscription.id},
        max_attempts=max_attempts,
    )
    return subscription


async def extend_or_start(
    conn: Connection, user_id: int, delta: timedelta, backend: str
) -> asyncpg.Record:
    """Extend the user's active subscription (the paid one first) by ``delta`` from
    max(now, expiry), or start a ``grant`` subscription on ``backend``; the row, to be
    activated on the panel by the caller's ACTIVATE job."""
    current = await conn.fetchrow(
        "select id from subscriptions where user_id = $1"
        " and status = 'active' and expires_at > now()"
        " order by (kind = 'paid') desc, expires_at desc limit 1 for update",
        user_id,
    )
    if current is not None:
        return await fetch_one(
            conn,
            "update subscriptions set expires_at = greatest(now(), expires_at) + $2,"
            " activation_status = 'pending', next_attempt_at = now(), activation_attempts = 0,"
            f" last_error = null, updated_at = now() where id = $1"
            f" returning {_SUBSCRIPTION_COLUMNS}",
            current["id"],
            delta,
        )
    created = await fetch_one(
        conn,
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
        " vpn_backend, next_attempt_at) values ($1, $2, 'paid', now(), now() + $3, $4, now())"
        " returning id",
        user_id,
        GRANT_PLAN_ID,
        delta,
        backend,
    )
    return await fetch_one(
        conn,
        f"update subscriptions set vpn_account = $2 where id = $1"
        f" returning {_SUBSCRIPTION_COLUMNS}",
        created["id"],
        account_name(user_id, created["id"]),
    )


async def history(
    db: Database, user_id: int, *, limit: int = 50, before_id: int | None = None
) -> list[AuditEntry]:
    """A user's entries, newest first (``before_id`` pages back)."""

    async def unit(conn: Connection) -> list[AuditEntry]:
        rows = await conn.fetch(
            f"select {_AUDIT_COLUMNS} from audit_log where user_id = $1"
            " and ($2::bigint is null or id < $2) order by id desc limit $3",
            user_id,
            before_id,
            limit,
        )
        return [_entry(r) for r in rows]

    return await db.read(unit)


async def granted(db: Database, key: str) -> AuditEntry | None:
    """The entry holding ``key``, if that grant happened."""

    async def unit(conn: Connection) -> AuditEntry | None:
        row = await conn.fetchrow(
            f"select {_AUDIT_COLUMNS} from audit_log where grant_key = $1", key
        )
        return _entry(row) if row else None

    return await db.read(unit)
