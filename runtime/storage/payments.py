"""Payments: intents stored before any provider call, and crediting exactly once.

``finalize`` is the one place money turns into access or balance. It runs as one
transaction that locks the user's row (so two payments of one user cannot race into two
subscriptions) and the intent's row (so two deliveries of one payment cannot both
credit), checks amount and currency against the intent, moves the status forward only,
extends the subscription from max(now, expiry) or tops up the balance, and writes the
activation job and the user's notification to the outbox.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .subscriptions import Subscription, Terms, extend_or_create
from .users import add_balance, ensure_user, lock_user


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    user_id: int
    provider: str
    external_id: str | None
    amount_minor: int
    currency: str
    status: str
    purpose: str
    plan_id: str | None
    subscription_id: int | None
    invoice_url: str | None
    created_at: datetime
    expires_at: datetime | None


_COLUMNS = (
    "id::text as id, user_id, provider, external_id, amount_minor, currency, status, purpose,"
    " plan_id, subscription_id, invoice_url, created_at, expires_at"
)


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(**dict(row))


class Verdict(enum.StrEnum):
    CREDITED = "credited"
    DUPLICATE = "duplicate"
    """The same charge again (a replayed webhook, a second delivery): an idempotent skip."""
    MISMATCH = "mismatch"
    """Amount, currency or provider differ from the intent: refused, nothing credited."""
    UNKNOWN_INTENT = "unknown_intent"
    EXTRA_CHARGE = "extra_charge"
    """A second, different charge for an intent already paid: recorded, not credited;
    an admin must refund it."""


@dataclass(frozen=True, slots=True)
class Finalized:
    verdict: Verdict
    payment: Payment | None
    subscription: Subscription | None = None
    balance_minor: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Charge:
    """A confirmed charge as the core sees it (from a provider's ConfirmedPayment)."""

    provider: str
    external_id: str
    intent_id: str
    amount_minor: int
    currency: str


async def create_intent(
    db: Database,
    *,
    user_id: int,
    provider: str,
    amount_minor: int,
    currency: str,
    purpose: str,
    plan_id: str | None,
    ttl_minutes: int,
) -> Payment:
    """Store what the user is about to pay before any provider call."""

    async def unit(conn: Connection) -> Payment:
        await ensure_user(conn, user_id)
        row = await fetch_one(
            conn,
            "insert into payments (user_id, provider, amount_minor, currency, purpose, plan_id,"
            " expires_at) values ($1, $2, $3, $4, $5, $6, now() + make_interval(mins => $7))"
            f" returning {_COLUMNS}",
            user_id,
            provider,
            amount_minor,
            currency,
            purpose,
            plan_id,
            ttl_minutes,
        )
        return _payment(row)

    return await db.transaction(unit)


async def mark_invoiced(
    db: Database, payment_id: str, *, external_id: str | None, url: str | None
) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(
            "update payments set status = 'invoiced', external_id = coalesce($2, external_id),"
            " invoice_url = $3 where id = $1 and status = 'created'",
            uuid.UUID(payment_id),
            external_id,
            url,
        )

    await db.transaction(unit, retry=True)


async def get(db: Database, payment_id: str) -> Payment | None:
    try:
        key = uuid.UUID(payment_id)
    except ValueError:
        return None

    async def unit(conn: Connection) -> Payment | None:
        row = await conn.fetchrow(f"select {_COLUMNS} from payments where id = $1", key)
        return _payment(row) if row else None

    return await db.read(unit)


async def finalize(
    db: Database, charge: Charge, terms: Terms | None, *, activation_attempts: int = 10
) -> Finalized:
    """Credit ``charge`` exactly once; see the module docstring. ``terms`` are the plan's
    for a subscription purchase (None for a top-up)."""
    try:
        intent_key = uuid.UUID(charge.intent_id)
    except ValueError:
        return Finalized(Verdict.UNKNOWN_INTENT, None, reason="payload is not an intent id")

    async def unit(conn: Connection) -> Finalized:
        owner = await conn.fetchval("select user_id from payments where id = $1", intent_key)
        if owner is None:
            return Finalized(Verdict.UNKNOWN_INTENT, None, reason="no such intent")
        await lock_user(conn, owner)
        row = await fetch_one(
            conn, f"select {_COLUMNS} from payments where id = $1 for update", intent_key
        )
        payment = _payment(row)
        problem = _mismatch(payment, charge)
        if problem:
            return Finalized(Verdict.MISMATCH, payment, reason=problem)
        if payment.status in ("finalized", "refunded"):
            if payment.external_id == charge.external_id:
                return Finalized(Verdict.DUPLICATE, payment, reason=f"already {payment.status}")
            return await _record_extra_charge(conn, payment, charge)
        other = await conn.fetchval(
            "select id from payments where provider = $1 and external_id = $2 and id <> $3",
            charge.provider,
            charge.external_id,
            intent_key,
        )
        if other is not None:
            return Finalized(
                Verdict.MISMATCH, payment, reason="this charge already paid another intent"
            )
        return await _credit(conn, payment, charge, terms, activation_attempts)

    return await db.transaction(unit)


def _mismatch(payment: Payment, charge: Charge) -> str:
    if payment.provider != charge.provider:
        return f"provider {charge.provider!r} does not match the intent's {payment.provider!r}"
    if payment.currency != charge.currency or payment.amount_minor != charge.amount_minor:
        return (
            f"paid {charge.amount_minor} {charge.currency}, "
            f"intent asks {payment.amount_minor} {payment.currency}"
        )
    return ""


async def _credit(
    conn: Connection,
    payment: Payment,
    charge: Charge,
    terms: Terms | None,
    activation_attempts: int,
) -> Finalized:
    key = uuid.UUID(payment.id)
    subscription = None
    balance = None
    if payment.purpose == "topup":
        balance = await add_balance(conn, payment.user_id, payment.amount_minor)
    else:
        if terms is None:
            raise LookupError(f"no terms for plan {payment.plan_id!r} of payment {payment.id}")
        subscription = await extend_or_create(conn, payment.user_id, terms)
        await enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{subscription.id}:payment:{payment.id}",
            payload={"subscription_id": subscription.id},
            max_attempts=activation_attempts,
        )
    await conn.execute(
        "update payments set status = 'paid', external_id = $2, paid_at = now()"
        " where id = $1 and status <> 'paid'",
        key,
        charge.external_id,
    )
    row = await fetch_one(
        conn,
        "update payments set status = 'finalized', finalized_at = now(), subscription_id = $2"
        f" where id = $1 returning {_COLUMNS}",
        key,
        subscription.id if subscription else None,
    )
    await enqueue(
        conn,
        kind=job_kinds.NOTIFY,
        dedup_key=f"notify:payment:{payment.id}",
        payload={
            "chat_id": payment.user_id,
            "template": "topup_credited" if balance is not None else "payment_received",
            "params": {
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "balance_minor": balance,
                "plan_id": payment.plan_id,
                "expires_at": subscription.expires_at.isoformat() if subscription else None,
            },
        },
    )
    return Finalized(Verdict.CREDITED, _payment(row), subscription, balance)


async def _record_extra_charge(conn: Connection, payment: Payment, charge: Charge) -> Finalized:
    await conn.execute(
        "insert into payments (user_id, provider, external_id, amount_minor, currency, status,"
        " purpose, plan_id, paid_at) values ($1, $2, $3, $4, $5, 'paid', $6, $7, now())"
        " on conflict (provider, external_id) do nothing",
        payment.user_id,
        charge.provider,
        charge.external_id,
        charge.amount_minor,
        charge.currency,
        payment.purpose,
        payment.plan_id,
    )
    return Finalized(Verdict.EXTRA_CHARGE, payment, reason="intent already paid by another charge")


async def open_invoices(db: Database, provider: str, *, limit: int = 1000) -> list[Payment]:
    """Invoices still waiting for payment, oldest first (for the payment watcher)."""

    async def unit(conn: Connection) -> list[Payment]:
        rows = await conn.fetch(
            f"select {_COLUMNS} from payments where status in ('created', 'invoiced')"
            " and provider = $1 and external_id is not null order by created_at limit $2",
            provider,
            limit,
        )
        return [_payment(r) for r in rows]

    return await db.read(unit)


async def expire_stale(db: Database, *, limit: int = 1000) -> int:
    """Mark unpaid intents past their expiry as expired; returns how many."""

    async def unit(conn: Connection) -> int:
        done = await conn.fetch(
            "update payments set status = 'expired' where id in (select id from payments"
            " where status in ('created', 'invoiced') and expires_at < now()"
            " order by expires_at limit $1 for update skip locked) returning id",
            limit,
        )
        return len(done)

    return await db.transaction(unit, retry=True)


@dataclass(frozen=True, slots=True)
class Refunded:
    payment: Payment
    subscription_id: int | None
    access_revoked: bool
    balance_taken_minor: int


async def refund(
    db: Database, payment_id: str, *, plan_duration: timedelta | None
) -> Refunded | None:
    """Record a refund and take back what the payment gave, in one transaction.

    A subscription loses ``plan_duration`` (revoked when that leaves no time); a top-up is
    taken back from the balance as far as it goes. Returns None unless the payment was
    finalized (a second refund changes nothing).
    """
    try:
        key = uuid.UUID(payment_id)
    except ValueError:
        return None

    async def unit(conn: Connection) -> Refunded | None:
        owner = await conn.fetchval("select user_id from payments where id = $1", key)
        if owner is None:
            return None
        await lock_user(conn, owner)
        row = await conn.fetchrow(
            f"update payments set status = 'refunded', refunded_at = now() where id = $1"
            f" and status = 'finalized' returning {_COLUMNS}",
            key,
        )
        if row is None:
            return None
        payment = _payment(row)
        revoked = False
        taken = 0
        if payment.purpose == "topup":
            taken = await conn.fetchval(
                "with before as (select balance_minor from users where telegram_id = $1)"
                " update users set balance_minor = balance_minor - least(balance_minor, $2)"
                " where telegram_id = $1 returning (select balance_minor from before)"
                " - balance_minor",
                payment.user_id,
                payment.amount_minor,
            )
        elif payment.subscription_id is not None:
            revoked = await _shorten(conn, payment, plan_duration or timedelta(0))
        await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=f"notify:refund:{payment.id}",
            payload={
                "chat_id": payment.user_id,
                "template": "payment_refunded",
                "params": {"amount_minor": payment.amount_minor, "currency": payment.currency},
            },
        )
        return Refunded(payment, payment.subscription_id, revoked, int(taken or 0))

    return await db.transaction(unit)


async def _shorten(conn: Connection, payment: Payment, duration: timedelta) -> bool:
    row = await fetch_one(
        conn,
        "update subscriptions set"
        " status = case when expires_at - $2::interval <= now() then 'revoked' else status end,"
        " expires_at = greatest(expires_at - $2::interval, starts_at + interval '1 second'),"
        " updated_at = now() where id = $1 returning status",
        payment.subscription_id,
        duration,
    )
    revoked = bool(row["status"] == "revoked")
    await enqueue(
        conn,
        kind=job_kinds.REVOKE if revoked else job_kinds.ACTIVATE,
        dedup_key=f"{'revoke' if revoked else 'activate'}:{payment.subscription_id}"
        f":refund:{payment.id}",
        payload={"subscription_id": payment.subscription_id},
    )
    return revoked
