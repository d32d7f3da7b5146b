"""Traffic top-ups, traffic reminders and device resets (migration ``*_limits.sql``).

A traffic top-up is bought as a balance top-up carrying an order (``traffic_orders``):
``finalize_charge`` credits the payment once, as every top-up, and a trigger on the payment
reaching ``finalized`` spends it on the order in the same transaction
(``limits_credit_traffic``): a ``traffic_topups`` row under the audit key
``traffic:<payment>``, the activation job that raises the panel's limit, and the user's
message. The top-ups of a subscription's current period add to its plan's limit.

A traffic reminder is a ``traffic_reminders`` row, unique per subscription, period and
threshold, written with its notification: it goes out once per period, whatever restarts
or how many processes scan. A device reset is a conditional upsert of ``device_resets``:
the cool-down holds across processes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import grants, job_kinds
from ._database import Connection, Database, fetch_one
from .outbox import enqueue
from .payments import _COLUMNS as _PAYMENT_COLUMNS
from .payments import Payment, _payment
from .subscriptions import _COLUMNS as _SUBSCRIPTION_COLUMNS
from .subscriptions import Subscription
from .users import ensure_user


@dataclass(frozen=True, slots=True)
class TrafficOrder:
    subscription_id: int
    package: str
    bytes: int
    keep_as_balance: bool
    """The price is in the balance currency: a payment that arrives after the subscription
    ended stays on the balance instead of being recorded as an unapplied top-up."""
    activation_attempts: int = 8
    """Attempts of the activation job that raises the panel's limit."""


async def create_order(
    db: Database,
    *,
    user_id: int,
    provider: str,
    amount_minor: int,
    currency: str,
    order: TrafficOrder,
    ttl_minutes: int,
) -> Payment | None:
    """The payment intent of a traffic top-up and its order, in one transaction; None when
    the subscription is not the user's running one."""

    async def unit(conn: Connection) -> Payment | None:
        await ensure_user(conn, user_id)
        running = await conn.fetchval(
            "select true from subscriptions where id = $1 and user_id = $2"
            " and status = 'active' and expires_at > now()",
            order.subscription_id,
            user_id,
        )
        if not running:
            return None
        row = await fetch_one(
            conn,
            "insert into payments (user_id, provider, amount_minor, currency, purpose,"
            " expires_at) values ($1, $2, $3, $4, 'topup', now() + make_interval(mins => $5))"
            f" returning {_PAYMENT_COLUMNS}",
            user_id,
            provider,
            amount_minor,
            currency,
            ttl_minutes,
        )
        await conn.execute(
            "insert into traffic_orders (payment_id, subscription_id, package, bytes,"
            " keep_as_balance, activation_attempts) values ($1, $2, $3, $4, $5, $6)",
            row["id"] if isinstance(row["id"], uuid.UUID) else uuid.UUID(str(row["id"])),
            order.subscription_id,
            order.package,
            order.bytes,
            order.keep_as_balance,
            order.activation_attempts,
        )
        return _payment(row)

    return await db.transaction(unit)


async def credit(db: Database, payment_id: str) -> str:
    """Run the order of a finalized payment again (the trigger ran it already): a no-op
    that says ``duplicate``; for tests and repairs."""

    async def unit(conn: Connection) -> str:
        return str(await conn.fetchval("select limits_credit_traffic($1)", uuid.UUID(payment_id)))

    return await db.transaction(unit, retry=True)


async def extra_bytes_in(conn: Connection, subscription_id: int, period: datetime) -> int:
    value = await conn.fetchval(
        "select coalesce(sum(bytes), 0) from traffic_topups"
        " where subscription_id = $1 and period_started_at = $2",
        subscription_id,
        period,
    )
    return int(value or 0)


async def extra_bytes(db: Database, subscription_id: int, period: datetime) -> int:
    """Traffic bought on top of the plan for the period that started at ``period``."""

    async def unit(conn: Connection) -> int:
        return await extra_bytes_in(conn, subscription_id, period)

    return await db.read(unit)


@dataclass(frozen=True, slots=True)
class Running:
    subscription: Subscription
    extra_bytes: int


async def running_with_limits(
    db: Database, *, plan_ids: list[str], trial: bool, after_id: int, limit: int
) -> list[Running]:
    """Running subscriptions whose plan (or trial) limits traffic, by id after
    ``after_id``, with their current period's top-ups."""

    async def unit(conn: Connection) -> list[Running]:
        rows = await conn.fetch(
            f"select {_SUBSCRIPTION_COLUMNS}, coalesce((select sum(t.bytes) from traffic_topups t"
            " where t.subscription_id = s.id and t.period_started_at = s.period_started_at), 0)"
            " as extra from subscriptions s where s.status = 'active' and s.expires_at > now()"
            " and s.id > $1 and ((s.kind = 'paid' and s.plan_id = any($2::text[]))"
            " or (s.kind = 'trial' and $3)) order by s.id limit $4",
            after_id,
            plan_ids,
            trial,
            limit,
        )
        found = []
        for row in rows:
            values = dict(row)
            extra = int(values.pop("extra") or 0)
            found.append(Running(Subscription(**values), extra))
        return found

    return await db.read(unit)


async def remind(
    db: Database,
    subscription: Subscription,
    threshold: int,
    *,
    params: dict[str, object],
    max_attempts: int,
) -> bool:
    """Queue the reminder of ``threshold`` for the subscription's current period, once:
    True when this call queued it."""

    async def unit(conn: Connection) -> bool:
        claimed = await conn.fetchval(
            "insert into traffic_reminders (subscription_id, period_started_at, threshold)"
            " values ($1, $2, $3) on conflict do nothing returning true",
            subscription.id,
            subscription.period_started_at,
            threshold,
        )
        if not claimed:
            return False
        period = int(subscription.period_started_at.timestamp() * 1_000_000)
        await enqueue(
            conn,
            kind=job_kinds.NOTIFY,
            dedup_key=f"notify:traffic:{subscription.id}:{period}:{threshold}",
            payload={
                "chat_id": subscription.user_id,
                "template": "limits_traffic_used_up"
                if threshold >= 100
                else "limits_traffic_warning",
                "params": {"subscription_id": subscription.id, "percent": threshold, **params},
            },
            max_attempts=max_attempts,
        )
        return True

    return await db.transaction(unit, retry=True)


async def claim_device_reset(
    db: Database, subscription_id: int, *, user_id: int, cooldown: timedelta
) -> tuple[bool, datetime]:
    """Take the subscription's device reset if its cool-down is over: (True, now) when
    taken (written to the audit log), else (False, when the last reset was). One
    conditional upsert: two processes cannot both take it."""

    async def unit(conn: Connection) -> tuple[bool, datetime]:
        taken = await conn.fetchval(
            "insert into device_resets (subscription_id, last_reset_at) values ($1, now())"
            " on conflict (subscription_id) do update set last_reset_at = now()"
            " where device_resets.last_reset_at <= now() - $2::interval"
            " returning last_reset_at",
            subscription_id,
            cooldown,
        )
        if taken is not None:
            await grants.note(
                conn,
                actor=grants.user_actor(user_id),
                action="devices_reset",
                user_id=user_id,
                details={"subscription_id": subscription_id},
            )
            return True, taken
        last = await conn.fetchval(
            "select last_reset_at from device_resets where subscription_id = $1",
            subscription_id,
        )
        return False, last

    return await db.transaction(unit, retry=True)


async def release_device_reset(db: Database, subscription_id: int, taken_at: datetime) -> None:
    """Give back a reset the panel did not carry out (only the one taken at ``taken_at``)."""

    async def unit(conn: Connection) -> None:
        await conn.execute(
            "delete from device_resets where subscription_id = $1 and last_reset_at = $2",
            subscription_id,
            taken_at,
        )

    await db.transaction(unit, retry=True)
