"""Subscriptions: access periods and the state of their VPN accounts.

A subscription's traffic is counted per paid period (``period_started_at``): the first
purchase and every paid extension start one; days granted by an admin, a refund or a
trial's lifetime do not. ``account_period_started_at`` is the period the VPN account was
last provisioned for.

An ended subscription's account is disabled (``revoked``, since ``revoked_at``) and,
after a retention, deleted from its panel (``deleting`` while queued, then ``deleted``).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue, enqueue_many
from .users import ensure_user


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    user_id: int
    plan_id: str
    kind: str
    status: str
    starts_at: datetime
    expires_at: datetime
    activation_status: str
    vpn_backend: str
    vpn_account: str | None
    access_url: str | None
    activation_attempts: int
    period_started_at: datetime
    """When the current paid period started: the account's traffic counts from here."""
    account_period_started_at: datetime | None
    """The period the VPN account was last provisioned for (None before the first time)."""


@dataclass(frozen=True, slots=True)
class Terms:
    """What a purchase or a trial grants."""

    plan_id: str
    backend: str
    duration: timedelta
    traffic_limit_bytes: int | None
    device_limit: int | None


_COLUMNS = (
    "id, user_id, plan_id, kind, status, starts_at, expires_at, activation_status, vpn_backend,"
    " vpn_account, access_url, activation_attempts, period_started_at, account_period_started_at"
)


def account_name(user_id: int, subscription_id: int) -> str:
    """The deterministic VPN account name of a subscription: a retry adopts, never duplicates."""
    return f"u{user_id}_s{subscription_id}"


def _row(record: asyncpg.Record) -> Subscription:
    return Subscription(**dict(record))


_FIELDS = tuple(field.name for field in dataclasses.fields(Subscription))


def from_stored(record: asyncpg.Record) -> Subscription:
    """A ``subscriptions`` row returned whole (a composite value, every column)."""
    return Subscription(**{name: record[name] for name in _FIELDS})


async def extend_or_create(conn: Connection, user_id: int, terms: Terms) -> Subscription:
    """Extend the user's active paid subscription on the same backend from
    max(now, its expiry), else upgrade their active trial there into the paid subscription
    (``upgrade_target``), else start a new one; either way a new traffic period starts now.
    The caller holds the user's row lock. A credited payment does the same inside the
    database function ``finalize_charge`` (the migrations of that name): change both."""
    current = await upgrade_target(conn, user_id, terms.backend)
    if current is not None:
        row = await fetch_one(
            conn,
            "update subscriptions set expires_at = greatest(now(), expires_at) + $2,"
            " kind = 'paid', plan_id = $3, period_started_at = now(),"
            " activation_status = 'pending', next_attempt_at = now(), activation_attempts = 0,"
            f" last_error = null, updated_at = now() where id = $1 returning {_COLUMNS}",
            current.id,
            terms.duration,
            terms.plan_id,
        )
    else:
        row = await fetch_one(
            conn,
            "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at,"
            " vpn_backend, next_attempt_at) values ($1, $2, 'paid', now(), now() + $3, $4, now())"
            f" returning {_COLUMNS}",
            user_id,
            terms.plan_id,
            terms.duration,
            terms.backend,
        )
        row = await _name_account(conn, row["id"], user_id)
    return _row(row)


async def upgrade_target(conn: Connection, user_id: int, backend: str) -> Subscription | None:
    """What a purchase on ``backend`` extends, locked: the user's active paid subscription
    there (the latest), else their active trial there, which the purchase turns into the
    paid subscription (one account, one link; the paid time starts at the trial's end).
    None: the purchase starts a new subscription."""
    row = await conn.fetchrow(
        f"select {_COLUMNS} from subscriptions where user_id = $1 and vpn_backend = $2"
        " and status = 'active' order by kind = 'paid' desc, expires_at desc limit 1"
        " for update",
        user_id,
        backend,
    )
    return _row(row) if row is not None else None


async def create_trial(conn: Connection, user_id: int, terms: Terms) -> Subscription | None:
    """Start the user's one trial; None when it was used already (one conditional update).
    The trial is written to the audit log (``trial.start``) like every grant."""
    claimed = await conn.fetchval(
        "update users set trial_used_at = now(), updated_at = now()"
        " where telegram_id = $1 and trial_used_at is null returning telegram_id",
        user_id,
    )
    if claimed is None:
        return None
    row = await fetch_one(
        conn,
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at, vpn_backend,"
        " next_attempt_at) values ($1, $2, 'trial', now(), now() + $3, $4, now())"
        f" returning {_COLUMNS}",
        user_id,
        terms.plan_id,
        terms.duration,
        terms.backend,
    )
    await conn.execute(
        "insert into audit_log (actor, user_id, action, grant_key, details)"
        " values ('user:' || $1::bigint, $1::bigint, 'trial.start', 'trial:' || $1::bigint,"
        " jsonb_build_object('subscription_id', $2::bigint, 'plan_id', $3::text,"
        " 'hours', extract(epoch from $4::interval) / 3600))",
        user_id,
        row["id"],
        terms.plan_id,
        terms.duration,
    )
    return _row(await _name_account(conn, row["id"], user_id))


async def _name_account(conn: Connection, subscription_id: int, user_id: int) -> asyncpg.Record:
    return await fetch_one(
        conn,
        f"update subscriptions set vpn_account = $2 where id = $1 returning {_COLUMNS}",
        subscription_id,
        account_name(user_id, subscription_id),
    )


async def fetch(conn: Connection, subscription_id: int) -> Subscription | None:
    """The subscription, read inside the caller's unit of work."""
    row = await conn.fetchrow(
        f"select {_COLUMNS} from subscriptions where id = $1", subscription_id
    )
    return _row(row) if row else None


async def get(db: Database, subscription_id: int) -> Subscription | None:
    async def unit(conn: Connection) -> Subscription | None:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from subscriptions where id = $1", subscription_id
        )
        return _row(row) if row else None

    return await db.read(unit)


async def of_user(db: Database, user_id: int) -> list[Subscription]:
    """The user's subscriptions, newest expiry first."""

    async def unit(conn: Connection) -> list[Subscription]:
        rows = await conn.fetch(
            f"select {_COLUMNS} from subscriptions where user_id = $1"
            " order by expires_at desc limit 20",
            user_id,
        )
        return [_row(r) for r in rows]

    return await db.read(unit)


async def start_trial(
    db: Database, user_id: int, terms: Terms, *, max_attempts: int
) -> Subscription | None:
    """The user's one trial with its activation job, or None when it was used already."""

    async def unit(conn: Connection) -> Subscription | None:
        await ensure_user(conn, user_id)
        subscription = await create_trial(conn, user_id, terms)
        if subscription is not None:
            await enqueue(
                conn,
                kind=job_kinds.ACTIVATE,
                dedup_key=f"activate:{subscription.id}:trial",
                payload={"subscription_id": subscription.id},
                max_attempts=max_attempts,
            )
        return subscription

    return await db.transaction(unit)


ACCESS_READY = "access_ready"
ACCESS_EXTENDED = "access_extended"
ACCESS_EXTENDED_NEW_LINK = "access_extended_new_link"


def access_notice_key(subscription_id: int, payment_id: str | None) -> str:
    """The dedup key of the message that follows an activation: one per payment, so every
    payment ends in a message; one per subscription for the rest (a trial, granted days)."""
    if payment_id is None:
        return f"notify:access:{subscription_id}"
    return f"notify:access:{subscription_id}:payment:{payment_id}"


async def activation_succeeded(
    db: Database,
    subscription_id: int,
    *,
    reference: str,
    access_url: str,
    period_started_at: datetime,
    payment_id: str | None = None,
) -> bool:
    """Record the account, provisioned for the period that started at
    ``period_started_at``, and tell the user what they now have, in one transaction.

    Without ``payment_id`` (a trial, granted days) only the first activation of the
    subscription tells them (``access_ready``). An activation that a payment queued always
    does, once per payment (``access_notice_key``): ``access_ready`` when the subscription
    had no access before, else ``access_extended`` with the new expiry, or
    ``access_extended_new_link`` when the link changed (it comes with its QR code). Run
    again after a crash, it finds its message queued already.

    Returns False when the subscription ended meanwhile (expired, refunded): the panel call
    may have enabled the account after its revocation ran, so a revocation is queued again
    in the same transaction."""
    late_revocation = f"revoke:{subscription_id}:after-activation:{uuid.uuid4()}"

    async def unit(conn: Connection) -> bool:
        before = await conn.fetchrow(
            "select access_url from subscriptions where id = $1 and status = 'active' for update",
            subscription_id,
        )
        row = await conn.fetchrow(
            "update subscriptions set activation_status = 'active', access_url = $2,"
            " account_period_started_at = $3, last_error = null, next_attempt_at = null,"
            " updated_at = now() where id = $1 and status = 'active'"
            " returning user_id, expires_at",
            subscription_id,
            access_url,
            period_started_at,
        )
        if row is None or before is None:
            exists = await conn.fetchval(
                "select true from subscriptions where id = $1", subscription_id
            )
            if exists:
                await enqueue(
                    conn,
                    kind=job_kinds.REVOKE,
                    dedup_key=late_revocation,
                    payload={"subscription_id": subscription_id},
                    max_attempts=20,
                )
            return False
        previous_url = before["access_url"]
        if payment_id is None or previous_url is None:
            template = ACCESS_READY
        elif previous_url != access_url:
            template = ACCESS_EXTENDED_NEW_LINK
        else:
            template = ACCESS_EXTENDED
        params: dict[str, object] = {
            "subscription_id": subscription_id,
            "access_url": access_url,
            "expires_at": row["expires_at"].isoformat(),
            "reference": reference,
        }
        if payment_id is not None:
            params["payment_id"] = payment_id
        await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=access_notice_key(subscription_id, payment_id),
            payload={"chat_id": row["user_id"], "template": template, "params": params},
        )
        return True

    return await db.transaction(unit, retry=True)


async def activation_failed(db: Database, subscription_id: int, error: str, *, final: bool) -> None:
    """Count a failed attempt; the final one marks the subscription failed and tells the
    user their access is delayed (once)."""

    async def unit(conn: Connection) -> None:
        row = await conn.fetchrow(
            "update subscriptions set activation_attempts = activation_attempts + 1,"
            " last_error = $2, activation_status = case when $3 then 'failed'"
            " else activation_status end, updated_at = now() where id = $1 returning user_id",
            subscription_id,
            error[:2000],
            final,
        )
        if row is not None and final:
            await enqueue(
                conn,
                kind=job_kinds.NOTIFY,
                dedup_key=f"notify:delayed:{subscription_id}",
                payload={
                    "chat_id": row["user_id"],
                    "template": "activation_delayed",
                    "params": {"subscription_id": subscription_id},
                },
            )

    await db.transaction(unit, retry=True)


async def expire_due(db: Database, *, limit: int, max_attempts: int = 20) -> list[int]:
    """Mark subscriptions past their expiry as expired and queue the revocation of their
    accounts, in one transaction; the scan uses the partial index of active rows."""

    async def unit(conn: Connection) -> list[int]:
        rows = await conn.fetch(
            "update subscriptions set status = 'expired', updated_at = now() where id in ("
            " select id from subscriptions where status = 'active' and expires_at <= now()"
            " order by expires_at limit $1 for update skip locked) returning id",
            limit,
        )
        ids = [int(r["id"]) for r in rows]
        await enqueue_many(
            conn,
            kind=job_kinds.REVOKE,
            jobs=[(f"revoke:{i}:expired", {"subscription_id": i}) for i in ids],
            max_attempts=max_attempts,
        )
        return ids

    return await db.transaction(unit)


async def revoked(db: Database, subscription_id: int) -> None:
    """The account is disabled on its panel; its retention starts now."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update subscriptions set activation_status = 'revoked', revoked_at = now(),"
            " updated_at = now() where id = $1 and status <> 'active'"
            " and activation_status not in ('deleting', 'deleted')",
            subscription_id,
        )

    await db.transaction(unit, retry=True)


async def queue_deletions(
    db: Database, *, retention: timedelta, limit: int, max_attempts: int = 20
) -> list[int]:
    """Queue the deletion of accounts revoked longer than ``retention`` ago (at most
    ``limit``), in one transaction: they become ``deleting`` and each gets a revocation
    job that deletes. The scan reads the partial index of revoked accounts."""

    async def unit(conn: Connection) -> list[int]:
        rows = await conn.fetch(
            "update subscriptions set activation_status = 'deleting', updated_at = now()"
            " where id in (select id from subscriptions where activation_status = 'revoked'"
            " and revoked_at <= now() - $1::interval order by revoked_at limit $2"
            " for update skip locked) returning id",
            retention,
            limit,
        )
        ids = [int(r["id"]) for r in rows]
        await enqueue_many(
            conn,
            kind=job_kinds.REVOKE,
            jobs=[(f"delete:{i}", {"subscription_id": i, "delete": True}) for i in ids],
            max_attempts=max_attempts,
        )
        return ids

    return await db.transaction(unit)


async def deleted(db: Database, subscription_id: int) -> None:
    """The account is gone from its panel."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update subscriptions set activation_status = 'deleted', updated_at = now()"
            " where id = $1 and activation_status = 'deleting'",
            subscription_id,
        )

    await db.transaction(unit, retry=True)
