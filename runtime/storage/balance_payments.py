"""Paying for a plan from the balance: charged once per screen the user saw.

The purchase screen shows a ``Basis``: what the payment would buy on top of. Paying names
it, and ``pay`` charges only while it still holds, in one transaction that locks the
user's row (money per user is serialised there, as in ``renewals`` and ``finalize``),
then the subscription it extends. The charge's external id is derived from the basis
(``charge_id``) and unique per provider, so a second click on the same button, or the same
callback run again after a crash, finds the charge it made and reports it instead of
charging again (``Outcome.ALREADY_PAID``). Extending a subscription uses the id that
``auto_renewal`` charges a period under (``renewals.renewal_charge_id``): a renewal by
hand and an automatic one of the same period cannot both be charged.

A payment from the balance is recorded as a ``payments`` row (provider ``balance``,
purpose ``renewal``, already ``finalized``), as an automatic renewal is: the money was
counted as revenue when it was topped up. What it buys is what a purchase buys
(``subscriptions.extend_or_create``: the running paid subscription extended, or a trial
upgraded, or a new one), with its activation job, which names the payment so that the
access message follows (``subscriptions.activation_succeeded``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from . import discounts, job_kinds
from ._database import Connection, Database
from .outbox import enqueue
from .renewals import PROVIDER, PURPOSE, period_charge_id
from .subscriptions import Subscription, Terms, extend_or_create, fetch, upgrade_target
from .users import lock_user, spend_balance


@dataclass(frozen=True, slots=True)
class Basis:
    """What a purchase screen showed: the subscription a payment extends (its id, and its
    expiry in whole unix seconds), or for a new subscription 0 and the id of the user's
    latest subscription (0 for none), so that each new purchase has a basis of its own."""

    subscription_id: int
    mark: int


def charge_id(user_id: int, basis: Basis) -> str:
    """The balance charge's unique external id for ``basis``."""
    if basis.subscription_id:
        return period_charge_id(basis.subscription_id, basis.mark)
    return f"purchase:{user_id}:after:{basis.mark}"


def _period(expires_at: datetime) -> int:
    return math.floor(expires_at.timestamp())


class Outcome(enum.StrEnum):
    PAID = "paid"
    ALREADY_PAID = "already_paid"
    """This basis was paid already (a second click, the callback run again): nothing
    charged now; the payment is the one made then."""
    CHANGED = "changed"
    """The subscription changed since the screen was shown: nothing charged."""
    INSUFFICIENT = "insufficient"
    """The balance does not cover the price: nothing charged."""


@dataclass(frozen=True, slots=True)
class BalancePayment:
    outcome: Outcome
    balance_minor: int
    basis: Basis
    """The basis as it is now (after a payment: the paid one)."""
    payment_id: str | None = None
    subscription: Subscription | None = None
    price_minor: int | None = None
    """What the payment charged (the list price less a discount), once it is made."""


_LATEST = "select coalesce(max(id), 0) from subscriptions where user_id = $1"


async def _basis(conn: Connection, user_id: int, backend: str, *, lock: bool) -> Basis:
    if lock:
        target = await upgrade_target(conn, user_id, backend)
        if target is not None:
            return Basis(target.id, _period(target.expires_at))
    else:
        row = await conn.fetchrow(
            "select id, expires_at from subscriptions where user_id = $1 and vpn_backend = $2"
            " and status = 'active' order by kind = 'paid' desc, expires_at desc limit 1",
            user_id,
            backend,
        )
        if row is not None:
            return Basis(row["id"], _period(row["expires_at"]))
    return Basis(0, int(await conn.fetchval(_LATEST, user_id)))


@dataclass(frozen=True, slots=True)
class Quote:
    balance_minor: int
    basis: Basis


async def quote(db: Database, user_id: int, backend: str) -> Quote:
    """The user's balance and the basis a purchase on ``backend`` has now (one read)."""

    async def unit(conn: Connection) -> Quote:
        balance = await conn.fetchval(
            "select balance_minor from users where telegram_id = $1", user_id
        )
        return Quote(int(balance or 0), await _basis(conn, user_id, backend, lock=False))

    return await db.read(unit)


async def pay(
    db: Database,
    user_id: int,
    terms: Terms,
    basis: Basis,
    *,
    price_minor: int,
    currency: str,
    activation_attempts: int = 10,
    min_price: int | None = None,
) -> BalancePayment:
    """Buy ``terms`` for ``price_minor`` of the balance, once for ``basis``; see the module
    docstring. With ``min_price``, the user's discount applies (not below it) and the
    payment records it, as an invoice's intent does (``runtime.storage.discounts``)."""
    if price_minor <= 0:
        raise ValueError("a price must be positive")
    external_id = charge_id(user_id, basis)

    async def unit(conn: Connection) -> BalancePayment:
        user = await lock_user(conn, user_id)
        balance = user.balance_minor if user is not None else 0
        done = await conn.fetchrow(
            "select id::text as id, subscription_id, amount_minor from payments"
            " where provider = $1 and external_id = $2 and user_id = $3",
            PROVIDER,
            external_id,
            user_id,
        )
        if done is not None:
            return await _already(conn, user_id, terms, done, balance)
        now = await _basis(conn, user_id, terms.backend, lock=True)
        if user is None or now != basis:
            return BalancePayment(Outcome.CHANGED, balance, now)
        priced = await discounts.priced_for(conn, user_id, price_minor, min_price)
        if balance < priced.amount_minor:
            return BalancePayment(
                Outcome.INSUFFICIENT, balance, now, price_minor=priced.amount_minor
            )
        await discounts.claim(conn, priced)
        payment_id = await _record(conn, user_id, external_id, priced, currency, terms)
        if payment_id is None:  # taken by a charge of another user's: not this screen's
            return BalancePayment(Outcome.CHANGED, balance, now)
        left = await spend_balance(conn, user_id, priced.amount_minor)
        if left is None:  # the row is locked: the balance cannot have moved
            raise AssertionError("the locked balance changed under a payment")
        subscription = await extend_or_create(conn, user_id, terms)
        await conn.execute(
            "update payments set subscription_id = $2 where id = $1::uuid",
            payment_id,
            subscription.id,
        )
        await enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{subscription.id}:payment:{payment_id}",
            payload={"subscription_id": subscription.id, "payment_id": payment_id},
            max_attempts=activation_attempts,
        )
        return BalancePayment(
            Outcome.PAID,
            int(left),
            Basis(subscription.id, _period(subscription.expires_at)),
            payment_id,
            subscription,
            priced.amount_minor,
        )

    return await db.transaction(unit)


async def _record(
    conn: Connection,
    user_id: int,
    external_id: str,
    priced: discounts.Priced,
    currency: str,
    terms: Terms,
) -> str | None:
    payment_id: str | None = await conn.fetchval(
        "insert into payments (user_id, provider, external_id, amount_minor, currency,"
        " status, purpose, plan_id, paid_at, finalized_at, original_amount_minor,"
        " discount_percent, discount_source, next_discount_id)"
        " values ($1, $2, $3, $4, $5, 'finalized', $6, $7, now(), now(), $8, $9, $10, $11)"
        " on conflict (provider, external_id) do nothing returning id::text",
        user_id,
        PROVIDER,
        external_id,
        priced.amount_minor,
        currency,
        PURPOSE,
        terms.plan_id,
        *discounts.recorded(priced),
    )
    return payment_id


async def _already(
    conn: Connection, user_id: int, terms: Terms, done: asyncpg.Record, balance: int
) -> BalancePayment:
    subscription = None
    if done["subscription_id"] is not None:
        subscription = await fetch(conn, done["subscription_id"])
    now = await _basis(conn, user_id, terms.backend, lock=False)
    return BalancePayment(
        Outcome.ALREADY_PAID, balance, now, done["id"], subscription, done["amount_minor"]
    )
