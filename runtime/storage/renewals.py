"""Auto-renewal from the balance: one conditional transaction per subscription period.

``renew`` locks the user's row (money per user is serialised there), then the
subscription's, and renews only when the subscription is still active, still has the
expiry the caller saw and its user still has auto-renewal on. Spending the balance, the
payment record, the extension, the activation job and the notification are one unit of
work: all or nothing. The activation job names the payment, so the access message with
the new expiry and the link follows it (``subscriptions.activation_succeeded``). Two
workers (two processes) renewing the same subscription at once charge once: the second
waits for the first's locks, then finds the expiry moved and skips. The payment's external
id ``renewal:{subscription_id}:{expiry}`` is unique per provider, so a period is charged at
most once even past every other guard (a payment from the balance by hand uses it too).

A balance renewal is recorded as a ``payments`` row (provider ``balance``, purpose
``renewal``, already ``finalized``): the money was counted once as revenue when it was
topped up (purpose ``topup``); this row says what it bought, so sales per plan, a user's
payment history and refunds see renewals like any purchase, and revenue sums
``subscription`` and ``topup`` rows only.

Too little balance queues one reminder per subscription period (dedup key with the
expiry), however often the worker tries.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from . import discounts, job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .users import lock_user, spend_balance

PROVIDER = "balance"
PURPOSE = "renewal"


def _period(expires_at: datetime) -> int:
    return math.floor(expires_at.timestamp())


def period_of(expires_at: datetime) -> int:
    """The subscription period that ends at ``expires_at``: its unix second."""
    return _period(expires_at)


def renewal_charge_id(subscription_id: int, expires_at: datetime) -> str:
    """The renewal's unique external id: one charge per subscription period."""
    return period_charge_id(subscription_id, _period(expires_at))


def period_charge_id(subscription_id: int, period: int) -> str:
    """``renewal_charge_id`` of the period that ends at unix second ``period``."""
    return f"renewal:{subscription_id}:{period}"


def low_balance_key(subscription_id: int, expires_at: datetime) -> str:
    return f"notify:renew_low:{subscription_id}:{_period(expires_at)}"


def unavailable_key(subscription_id: int, expires_at: datetime) -> str:
    return f"notify:renew_unavailable:{subscription_id}:{_period(expires_at)}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A paid subscription within the lead time of its expiry whose user has auto-renew on."""

    subscription_id: int
    user_id: int
    plan_id: str
    expires_at: datetime
    balance_minor: int
    reminded_low: bool
    """The low-balance reminder of this period is queued already."""
    reminded_unavailable: bool
    card_provider: str | None = None
    """The provider of this period's card charge, else of the user's saved method in use
    (``saved_methods``), if any."""
    card_charge: str | None = None
    """The status of this period's card charge, if one was made (``card_renewals``):
    ``failed`` also when its intent expired unpaid."""

    @property
    def position(self) -> tuple[datetime, int]:
        return (self.expires_at, self.subscription_id)


# The page is chosen first (the partial index of active subscriptions by expiry), then
# each of its rows looks its reminders up by dedup key: never a pass over the outbox.
_DUE = """
with page as materialized (
    select s.id, s.user_id, s.plan_id, s.expires_at, u.balance_minor,
           floor(extract(epoch from s.expires_at))::bigint as period
    from subscriptions s
    join users u on u.telegram_id = s.user_id
    where s.status = 'active' and s.kind = 'paid' and u.auto_renew
      and s.expires_at <= now() + $1::interval
      and s.expires_at >= $2 and (s.expires_at, s.id) > ($2, $3)
    order by s.expires_at, s.id
    limit $4
)
select p.id, p.user_id, p.plan_id, p.expires_at, p.balance_minor,
       coalesce(c.provider, (select m.provider from saved_payment_methods m
                             where m.user_id = p.user_id and m.revoked_at is null))
           as card_provider,
       c.status as card_charge,
       exists (select 1 from outbox o
               where o.dedup_key = 'notify:renew_low:' || p.id || ':' || p.period) as reminded_low,
       exists (select 1 from outbox o
               where o.dedup_key = 'notify:renew_unavailable:' || p.id || ':' || p.period)
           as reminded_unavailable
from page p
left join lateral (
    -- this period's card charge; one whose intent expired unpaid counts as failed
    select case when i.status in ('expired', 'failed') and rc.status in ('charging', 'pending')
                then 'failed' else rc.status end as status,
           i.provider
    from renewal_charges rc join payments i on i.id = rc.payment_id
    where rc.subscription_id = p.id and rc.period = p.period
) c on true
order by p.expires_at, p.id
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def due(
    db: Database,
    *,
    lead: timedelta,
    after: tuple[datetime, int] | None = None,
    limit: int = 200,
) -> list[Candidate]:
    """Subscriptions to renew now, by expiry, after ``after`` (a candidate's ``position``).

    Reads the active subscriptions expiring within ``lead`` (the partial index of active
    rows by expiry): what is due, not the table."""
    start = after or (_EPOCH, 0)

    async def unit(conn: Connection) -> list[asyncpg.Record]:
        return await conn.fetch(_DUE, lead, start[0], start[1], limit)

    return [
        Candidate(
            subscription_id=r["id"],
            user_id=r["user_id"],
            plan_id=r["plan_id"],
            expires_at=r["expires_at"],
            balance_minor=r["balance_minor"],
            reminded_low=r["reminded_low"],
            reminded_unavailable=r["reminded_unavailable"],
            card_provider=r["card_provider"],
            card_charge=r["card_charge"],
        )
        for r in await db.read(unit)
    ]


class Outcome(enum.StrEnum):
    RENEWED = "renewed"
    INSUFFICIENT = "insufficient"
    """Too little balance: nothing charged; the period's reminder is queued (once)."""
    SKIPPED = "skipped"
    """Renewed meanwhile (by another worker), ended, or auto-renew turned off."""


@dataclass(frozen=True, slots=True)
class Renewal:
    outcome: Outcome
    expires_at: datetime | None = None
    """The new expiry (RENEWED) or the unchanged one."""
    balance_minor: int | None = None
    payment_id: str | None = None
    reminded: bool = False
    """INSUFFICIENT: the reminder was queued by this call (False: it was already)."""
    reason: str = ""


async def renew(
    db: Database,
    candidate: Candidate,
    *,
    price_minor: int,
    currency: str,
    duration: timedelta,
    activation_attempts: int = 8,
    notify_attempts: int = 8,
    min_price: int | None = None,
) -> Renewal:
    """Renew ``candidate`` for ``duration`` from its balance, or remind its user once.
    With ``min_price``, the user's discount applies to ``price_minor`` (not below it), as
    for any purchase (``runtime.storage.discounts``)."""
    if price_minor <= 0:
        raise ValueError("a renewal price must be positive")

    async def unit(conn: Connection) -> Renewal:
        user = await lock_user(conn, candidate.user_id)
        row = await conn.fetchrow(
            "select status, kind, expires_at from subscriptions where id = $1 for update",
            candidate.subscription_id,
        )
        if user is None or row is None:
            return Renewal(Outcome.SKIPPED, reason="no such subscription")
        if row["status"] != "active" or row["kind"] != "paid":
            return Renewal(Outcome.SKIPPED, row["expires_at"], reason=f"it is {row['status']}")
        if row["expires_at"] != candidate.expires_at:
            return Renewal(Outcome.SKIPPED, row["expires_at"], reason="renewed meanwhile")
        if not user.auto_renew:
            return Renewal(Outcome.SKIPPED, row["expires_at"], reason="auto-renew is off")
        priced = await discounts.priced_for(conn, candidate.user_id, price_minor, min_price)
        price = priced.amount_minor
        if user.balance_minor < price:
            reminded = await enqueue(
                conn,
                kind=job_kinds.NOTIFY,
                dedup_key=low_balance_key(candidate.subscription_id, candidate.expires_at),
                payload={
                    "chat_id": candidate.user_id,
                    "template": "renewal_insufficient",
                    "params": {
                        "subscription_id": candidate.subscription_id,
                        "amount_minor": price,
                        "currency": currency,
                        "balance_minor": user.balance_minor,
                        "expires_at": candidate.expires_at.isoformat(),
                        "plan_id": candidate.plan_id,
                    },
                },
                max_attempts=notify_attempts,
            )
            return Renewal(
                Outcome.INSUFFICIENT,
                candidate.expires_at,
                balance_minor=user.balance_minor,
                reminded=reminded,
            )
        await discounts.claim(conn, priced)
        payment_id = await conn.fetchval(
            "insert into payments (user_id, provider, external_id, amount_minor, currency,"
            " status, purpose, plan_id, subscription_id, paid_at, finalized_at,"
            " original_amount_minor, discount_percent, discount_source, next_discount_id)"
            " values ($1, $2, $3, $4, $5, 'finalized', $6, $7, $8, now(), now(),"
            " $9, $10, $11, $12)"
            " on conflict (provider, external_id) do nothing returning id::text",
            candidate.user_id,
            PROVIDER,
            renewal_charge_id(candidate.subscription_id, candidate.expires_at),
            price,
            currency,
            PURPOSE,
            candidate.plan_id,
            candidate.subscription_id,
            *discounts.recorded(priced),
        )
        if payment_id is None:
            return Renewal(Outcome.SKIPPED, row["expires_at"], reason="period charged already")
        balance = await spend_balance(conn, candidate.user_id, price)
        if balance is None:  # the row is locked: the balance cannot have moved
            raise AssertionError("the locked balance changed under a renewal")
        extended = await fetch_one(
            conn,
            "update subscriptions set expires_at = greatest(now(), expires_at) + $2,"
            " period_started_at = now(), activation_status = 'pending',"
            " next_attempt_at = now(), activation_attempts = 0, last_error = null,"
            " updated_at = now() where id = $1 returning expires_at",
            candidate.subscription_id,
            duration,
        )
        new_expiry: datetime = extended["expires_at"]
        await enqueue(
            conn,
            kind=job_kinds.ACTIVATE,
            dedup_key=f"activate:{candidate.subscription_id}:renewal:{payment_id}",
            payload={"subscription_id": candidate.subscription_id, "payment_id": payment_id},
            max_attempts=activation_attempts,
        )
        await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=f"notify:renewed:{candidate.subscription_id}:{_period(candidate.expires_at)}",
            payload={
                "chat_id": candidate.user_id,
                "template": "renewed",
                "params": {
                    "subscription_id": candidate.subscription_id,
                    "amount_minor": price,
                    "currency": currency,
                    "balance_minor": int(balance),
                    "expires_at": new_expiry.isoformat(),
                    "plan_id": candidate.plan_id,
                    "payment_id": payment_id,
                },
            },
            max_attempts=notify_attempts,
        )
        return Renewal(
            Outcome.RENEWED, new_expiry, balance_minor=int(balance), payment_id=payment_id
        )

    return await db.transaction(unit)


async def remind_unavailable(db: Database, candidate: Candidate, *, max_attempts: int = 8) -> bool:
    """Tell the user once per period that their plan cannot be renewed from the balance
    (it has no price in the balance currency). True when queued now."""

    async def unit(conn: Connection) -> bool:
        return await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=unavailable_key(candidate.subscription_id, candidate.expires_at),
            payload={
                "chat_id": candidate.user_id,
                "template": "renewal_unavailable",
                "params": {
                    "subscription_id": candidate.subscription_id,
                    "expires_at": candidate.expires_at.isoformat(),
                    "plan_id": candidate.plan_id,
                },
            },
            max_attempts=max_attempts,
        )

    return await db.transaction(unit, retry=True)
