"""Payments: intents stored before any provider call, and crediting exactly once.

``finalize`` is the one place money turns into access or balance. It runs as one
statement, the database function ``finalize_charge`` (the migration of that name), in
one transaction that locks the user's row (so two payments of one user cannot race into
two subscriptions) and the intent's row (so two deliveries of one payment cannot both
credit), checks the payer, amount and currency against the intent, moves the status
forward only, extends the subscription from max(now, expiry) (a running trial on the
plan's backend becomes the paid subscription) or tops up the balance, and writes the
activation job (naming the payment: its access message follows) and the user's
notification to the outbox.

A charge that moved money but buys nothing (another payer, amount or currency, a second
charge for a paid intent, no intent of ours) is recorded as a payment of its own with
status ``paid`` and ``refused`` set, against the user who paid: that is whom an admin
refunds. Another delivery of the same charge finds that row and is a skip.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from . import discounts, job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .subscriptions import Subscription, Terms, from_stored
from .users import ensure_user, lock_user


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
    refused: str | None = None
    """Set on a recorded charge that bought nothing: why (a ``Verdict`` value)."""
    paid_for: str | None = None
    """On a recorded charge: the intent it claimed to pay."""
    save_method: bool = False
    """The user chose to save the method this intent is paid with (auto-renewal)."""


_COLUMNS = (
    "id::text as id, user_id, provider, external_id, amount_minor, currency, status, purpose,"
    " plan_id, subscription_id, invoice_url, created_at, expires_at, refused,"
    " paid_for::text as paid_for, save_method"
)

MAX_AMOUNT = 2**63 - 1
"""The largest amount a payment row holds (bigint)."""
MAX_EXTERNAL_ID = 256
MAX_CURRENCY = 16


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(**dict(row))


class Verdict(enum.StrEnum):
    CREDITED = "credited"
    DUPLICATE = "duplicate"
    """The same charge again (a replayed webhook, a second delivery, a charge recorded as
    refused already): an idempotent skip."""
    MISMATCH = "mismatch"
    """Amount, currency or provider differ from the intent: refused, nothing credited;
    recorded against the payer, to refund."""
    UNKNOWN_INTENT = "unknown_intent"
    """The payload names no intent of ours: recorded against the payer when we know them."""
    EXTRA_CHARGE = "extra_charge"
    """A second, different charge for an intent already paid: recorded, not credited;
    an admin must refund it."""
    FOREIGN_PAYER = "foreign_payer"
    """Someone other than the intent's owner paid it: nothing credited to either; recorded
    against the payer, to refund to the payer."""


@dataclass(frozen=True, slots=True)
class Finalized:
    verdict: Verdict
    payment: Payment | None
    """The intent the charge named, when it is ours."""
    subscription: Subscription | None = None
    balance_minor: int | None = None
    reason: str = ""
    recorded: Payment | None = None
    """A refused charge, recorded against its payer (its ``refused`` says why)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """A confirmed charge as the core sees it (from a provider's ConfirmedPayment)."""

    provider: str
    external_id: str
    intent_id: str
    amount_minor: int
    currency: str
    payer_id: int | None = None
    """Who paid, when the provider knows; compared with the intent's owner."""


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
    discount_floors: Mapping[str, int] | None = None,
    save_method: bool = False,
) -> Payment:
    """Store what the user is about to pay before any provider call. With
    ``discount_floors`` (least prices per currency) ``amount_minor`` is the list price and
    the user's discount applies (``discounts.apply``): the intent asks the discounted
    amount and records the list price, the percent and its source. ``save_method``: the
    user chose to save the method they pay with (``saved_methods``)."""

    async def unit(conn: Connection) -> Payment:
        await ensure_user(conn, user_id)
        floor = None
        if discount_floors is not None:
            await lock_user(conn, user_id)
            floor = discount_floors.get(currency, 1)
        return await insert_intent(
            conn,
            user_id=user_id,
            provider=provider,
            amount_minor=amount_minor,
            currency=currency,
            purpose=purpose,
            plan_id=plan_id,
            ttl_minutes=ttl_minutes,
            discount_floor=floor,
            save_method=save_method,
        )

    return await db.transaction(unit)


async def insert_intent(
    conn: Connection,
    *,
    user_id: int,
    provider: str,
    amount_minor: int,
    currency: str,
    purpose: str,
    plan_id: str | None,
    ttl_minutes: int,
    discount_floor: int | None = None,
    save_method: bool = False,
    subscription_id: int | None = None,
) -> Payment:
    """``create_intent``'s insert, inside the caller's transaction (the user's row locked
    by the caller when a discount applies: ``discount_floor`` set)."""
    priced = await discounts.priced_for(conn, user_id, amount_minor, discount_floor)
    await discounts.claim(conn, priced)
    row = await fetch_one(
        conn,
        "insert into payments (user_id, provider, amount_minor, currency, purpose, plan_id,"
        " expires_at, original_amount_minor, discount_percent, discount_source,"
        " next_discount_id, save_method, subscription_id) values ($1, $2, $3, $4, $5, $6,"
        " now() + make_interval(mins => $7), $8, $9, $10, $11, $12, $13)"
        f" returning {_COLUMNS}",
        user_id,
        provider,
        priced.amount_minor,
        currency,
        purpose,
        plan_id,
        ttl_minutes,
        *discounts.recorded(priced),
        save_method,
        subscription_id,
    )
    return _payment(row)


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


async def locked(conn: Connection, payment_id: str) -> Payment:
    """The payment ``payment_id``, its row locked for the caller's transaction."""
    row = await fetch_one(
        conn, f"select {_COLUMNS} from payments where id = $1 for update", uuid.UUID(payment_id)
    )
    return _payment(row)


async def by_charge(db: Database, provider: str, external_id: str) -> Payment | None:
    """The payment ``provider`` knows as ``external_id`` (its charge id), if any."""

    async def unit(conn: Connection) -> Payment | None:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from payments where provider = $1 and external_id = $2",
            provider,
            external_id,
        )
        return _payment(row) if row else None

    return await db.read(unit)


async def finalize(
    db: Database,
    charge: Charge,
    plans: Mapping[str, Terms],
    *,
    activation_attempts: int = 10,
) -> Finalized:
    """Credit ``charge`` exactly once; see the module docstring. ``plans`` are the terms of
    every plan on sale, by plan id: the intent's plan picks its own.

    One statement (``finalize_charge``, a function in the database) and one commit,
    whatever the verdict. It runs inside an explicit transaction, although a lone statement
    would commit by itself: a process killed while its statement waits for a lock (another
    delivery of the same payment, say) must leave nothing committed, and only a ``COMMIT``
    that the dead process never sends guarantees that. Raises ``LookupError`` when a
    purchase's plan has no terms in ``plans``.

    A transient failure is retried: the unit is idempotent by (provider, charge id). When the
    connection is lost during ``COMMIT`` (the primary died, a failover), whether it committed
    is unknown; the retry finds the charge handled and answers ``DUPLICATE`` if it did, and
    credits it if it did not."""
    unstorable = _unstorable(charge)
    if unstorable:
        intent = await get(db, charge.intent_id)
        verdict = Verdict.UNKNOWN_INTENT if intent is None else Verdict.MISMATCH
        return Finalized(verdict, intent, reason=unstorable)
    try:
        intent_key: uuid.UUID | None = uuid.UUID(charge.intent_id)
    except ValueError:
        intent_key = None
    terms = list(plans.items())
    args = (
        intent_key,
        charge.provider,
        charge.external_id,
        charge.amount_minor,
        charge.currency,
        charge.payer_id,
        [plan_id for plan_id, _ in terms],
        [t.plan_id for _, t in terms],
        [t.backend for _, t in terms],
        [t.duration for _, t in terms],
        activation_attempts,
    )

    async def unit(conn: Connection) -> asyncpg.Record:
        return await fetch_one(conn, _FINALIZE, *args)

    try:
        row = await db.transaction(unit, retry=True)
    except asyncpg.NoDataFoundError as exc:
        raise LookupError(str(exc)) from exc
    intent = _stored_payment(row["intent"])
    verdict = Verdict(row["verdict"])
    reason = row["reason"]
    if reason is None:
        reason = _mismatch(intent, charge) if intent is not None else ""
    subscription = row["subscription"]
    return Finalized(
        verdict,
        intent,
        subscription=from_stored(subscription) if subscription and subscription["id"] else None,
        balance_minor=row["balance"],
        reason=reason,
        recorded=_stored_payment(row["recorded"]),
    )


_FINALIZE = (
    "select verdict, reason, intent, recorded, subscription, balance"
    " from finalize_charge($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)


def _stored_payment(row: asyncpg.Record | None) -> Payment | None:
    """A ``payments`` row returned whole (a composite value) as a ``Payment``."""
    if row is None or row["id"] is None:
        return None
    return Payment(
        id=str(row["id"]),
        user_id=row["user_id"],
        provider=row["provider"],
        external_id=row["external_id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        status=row["status"],
        purpose=row["purpose"],
        plan_id=row["plan_id"],
        subscription_id=row["subscription_id"],
        invoice_url=row["invoice_url"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        refused=row["refused"],
        paid_for=None if row["paid_for"] is None else str(row["paid_for"]),
        save_method=bool(row["save_method"]),
    )


def _unstorable(charge: Charge) -> str:
    """Why a charge's values cannot be stored (they came from a peer), or ``""``."""
    if not 0 < charge.amount_minor <= MAX_AMOUNT:
        return f"amount {str(charge.amount_minor)[:24]} is out of range"
    if not 0 < len(charge.external_id) <= MAX_EXTERNAL_ID:
        return "the charge id is empty or too long"
    if not 0 < len(charge.currency) <= MAX_CURRENCY:
        return "the currency is empty or too long"
    return ""


def _mismatch(payment: Payment, charge: Charge) -> str:
    if payment.provider != charge.provider:
        return f"provider {charge.provider!r} does not match the intent's {payment.provider!r}"
    if payment.currency != charge.currency or payment.amount_minor != charge.amount_minor:
        return (
            f"paid {charge.amount_minor} {charge.currency[:8]}, "
            f"intent asks {payment.amount_minor} {payment.currency}"
        )
    return ""


RECORDED_ALREADY = "recorded already"
"""How a ``DUPLICATE`` verdict's reason starts when the charge was recorded before."""


async def claim_refusal_alert(
    db: Database, *, provider: str, external_id: str, token: uuid.UUID | None = None
) -> tuple[Payment | None, bool]:
    """Claim the alert of the refused charge recorded as (``provider``, ``external_id``):
    the recorded payment, or None when none is, and whether the claim is this caller's
    (False: another claimed it). Concurrent callers wait for each other: one claims. The
    claim carries ``token`` (a new one by default), so a retry after a lost ``COMMIT``
    finds its own claim instead of a stranger's."""
    if not 0 < len(external_id) <= MAX_EXTERNAL_ID:
        return None, False
    mine = token or uuid.uuid4()

    async def unit(conn: Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "with target as (select id, refusal_alert_token from payments"
            " where provider = $1 and external_id = $2 and refused is not null),"
            " claimed as (update payments p"
            " set refusal_alerted_at = now(), refusal_alert_token = $3"
            " where p.id in (select id from target) and p.refusal_alerted_at is null"
            " returning p.id)"
            f" select {_COLUMNS}, exists(select 1 from claimed)"
            " or exists(select 1 from target where refusal_alert_token = $3) as claimed"
            " from payments where id in (select id from target)",
            provider,
            external_id,
            mine,
        )

    row = await db.statement(unit, retry=True)
    if row is None:
        return None, False
    fields = dict(row)
    claimed = bool(fields.pop("claimed"))
    return Payment(**fields), claimed


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
    taken back from the balance as far as it goes; a recorded charge that bought nothing
    (``refused``) gives nothing back. Returns None unless the payment was finalized or such
    a charge (a second refund changes nothing).
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
            "update payments set status = 'refunded', refunded_at = now() where id = $1"
            " and (status = 'finalized' or (status = 'paid' and refused is not null))"
            f" returning {_COLUMNS}",
            key,
        )
        if row is None:
            return None
        payment = _payment(row)
        revoked = False
        taken = 0
        if payment.refused is not None:
            pass  # it bought nothing: nothing to take back
        elif payment.purpose == "topup":
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
