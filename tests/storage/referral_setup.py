"""What the referral tests share: users who invited each other, payments and refunds."""

from __future__ import annotations

import itertools
from typing import Any

from runtime.storage import Connection, Database, payments, users
from runtime.storage import referrals as store
from runtime.storage.payments import Charge, Verdict
from runtime.storage.referrals import Level, Rules

RUB = "RUB"


def rules(*levels: Level, backend: str | None = "marzban") -> Rules:
    return Rules(levels=levels, balance_currency=RUB, backend=backend)


async def started(db: Database, user_id: int, inviter: int | None = None) -> store.Origin | None:
    """``user_id`` starts the bot, by ``inviter``'s link when given."""
    await users.touch_user(db, user_id, username=f"user{user_id}", language="en")
    code = await store.code_of(db, inviter) if inviter is not None else None
    return await store.record_start(db, user_id, referral_code=code)


async def chain(db: Database, *ids: int) -> None:
    """``ids[0]`` started on their own, each next one by the link of the one before."""
    await started(db, ids[0])
    for inviter, user_id in itertools.pairwise(ids):
        origin = await started(db, user_id, inviter)
        assert origin is not None and origin.invited_by == inviter


async def pay(
    db: Database, user_id: int, amount: int = 20000, currency: str = RUB, provider: str = "card"
) -> str:
    """A top-up of ``amount`` by ``user_id``, credited: the payment's id."""
    intent = await payments.create_intent(
        db,
        user_id=user_id,
        provider=provider,
        amount_minor=amount,
        currency=currency,
        purpose="topup",
        plan_id=None,
        ttl_minutes=60,
    )
    done = await payments.finalize(
        db, Charge(provider, f"charge-{intent.id}", intent.id, amount, currency, user_id), {}
    )
    assert done.verdict is Verdict.CREDITED
    return intent.id


async def refund(db: Database, payment_id: str) -> None:
    assert await payments.refund(db, payment_id, plan_duration=None) is not None


async def value(db: Database, sql: str, *args: Any) -> Any:
    async def unit(conn: Connection) -> Any:
        return await conn.fetchval(sql, *args)

    return await db.read(unit)


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.read(unit)


async def balance(db: Database, user_id: int) -> int:
    return int(await value(db, "select balance_minor from users where telegram_id = $1", user_id))


async def referral_entries(db: Database) -> list[tuple[str, int, int | None, int | None]]:
    """The audit log's referral entries: (key, user, days, balance delta), by key."""
    found = await rows(
        db,
        "select grant_key, user_id, days, balance_delta_minor from audit_log"
        " where action like 'referral.%' order by grant_key",
    )
    return [(r["grant_key"], r["user_id"], r["days"], r["balance_delta_minor"]) for r in found]
