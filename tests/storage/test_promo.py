"""Promo codes on a real PostgreSQL: every kind and limit, and exactly-once activation
under races."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import trio

from runtime.storage import Connection, Database, discounts, grants, job_kinds, users
from runtime.storage import promo as store
from runtime.storage import subscriptions as subs
from runtime.storage.promo import Kind, NewCode, Refusal
from runtime.storage.subscriptions import Terms

MONTH = Terms("month", "marzban", timedelta(days=30), None, 3)
PLANS = {"month": MONTH}
ADMIN = grants.admin_actor(7)


async def new_code(db: Database, code: str, kind: Kind, amount: int | None, **limits: Any) -> int:
    created = await store.create(db, NewCode(code, kind, amount, **limits), actor=ADMIN)
    assert created is not None
    return created.id


async def activate(db: Database, code: str, user_id: int) -> store.Activation:
    return await store.activate(db, code, user_id, plans=PLANS, backend="marzban")


async def scalar(db: Database, query: str, *args: object) -> object:
    async def unit(conn: Connection) -> object:
        return await conn.fetchval(query, *args)

    return await db.read(unit)


async def test_a_days_code_starts_a_subscription_with_its_activation_job(db: Database) -> None:
    code_id = await new_code(db, "WEEK", Kind.DAYS, 7)
    result = await activate(db, "WEEK", 11)
    assert result.refusal is None and result.activated is not None
    subscription = result.activated.subscription
    assert subscription is not None and subscription.plan_id == grants.GRANT_PLAN_ID
    left = subscription.expires_at - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    assert await scalar(db, "select count(*) from outbox where kind = $1", job_kinds.ACTIVATE) == 1
    entry = await grants.granted(db, f"promo:{code_id}:11")
    assert entry is not None and entry.days == 7 and entry.actor == "user:11"
    assert (await activate(db, "WEEK", 11)).refusal is Refusal.ALREADY_USED


async def test_a_days_code_extends_the_running_subscription(db: Database) -> None:
    await new_code(db, "MORE", Kind.DAYS, 10)
    first = await activate(db, "WEEK", 12)
    assert first.refusal is Refusal.UNKNOWN
    await new_code(db, "WEEK", Kind.DAYS, 7)
    week = await activate(db, "WEEK", 12)
    assert week.activated is not None and week.activated.subscription is not None
    more = await activate(db, "MORE", 12)
    assert more.activated is not None and more.activated.subscription is not None
    assert more.activated.subscription.id == week.activated.subscription.id
    gained = more.activated.subscription.expires_at - week.activated.subscription.expires_at
    assert timedelta(days=10) <= gained < timedelta(days=10, seconds=5)


async def test_a_balance_code_credits_the_balance_once(db: Database) -> None:
    await new_code(db, "CASH", Kind.BALANCE, 5000)
    result = await activate(db, "CASH", 13)
    assert result.activated is not None and result.activated.balance_minor == 5000
    assert (await activate(db, "CASH", 13)).refusal is Refusal.ALREADY_USED
    user = await users.get_user(db, 13)
    assert user is not None and user.balance_minor == 5000


async def test_a_plan_code_gives_the_plan_as_a_purchase_would(db: Database) -> None:
    await new_code(db, "FREEMONTH", Kind.PLAN, None, plan_id="month")
    result = await activate(db, "FREEMONTH", 14)
    assert result.activated is not None
    subscription = result.activated.subscription
    assert subscription is not None
    assert (subscription.plan_id, subscription.kind, subscription.vpn_backend) == (
        "month",
        "paid",
        "marzban",
    )
    assert subscription.vpn_account == subs.account_name(14, subscription.id)
    assert await scalar(
        db, "select payload->>'subscription_id' from outbox where kind = $1", job_kinds.ACTIVATE
    ) == str(subscription.id)


async def test_a_plan_code_whose_plan_is_gone_is_refused_and_not_counted(db: Database) -> None:
    await new_code(db, "OLDPLAN", Kind.PLAN, None, plan_id="year")
    assert (await activate(db, "OLDPLAN", 15)).refusal is Refusal.PLAN_GONE
    assert await scalar(db, "select activations from promo_codes where code = 'OLDPLAN'") == 0


async def test_discount_codes_set_a_personal_and_a_next_purchase_discount(db: Database) -> None:
    await new_code(db, "TEN", Kind.DISCOUNT, 10)
    await new_code(db, "FIVE", Kind.DISCOUNT, 5)
    await new_code(db, "NEXT30", Kind.NEXT_DISCOUNT, 30)
    ten = await activate(db, "TEN", 16)
    assert ten.activated is not None and ten.activated.percent == 10
    five = await activate(db, "FIVE", 16)
    assert five.activated is not None and five.activated.percent == 10  # the larger stays
    offered = await discounts.offered(db, 16)
    assert offered is not None and (offered.kind, offered.percent) == ("personal", 10)
    await activate(db, "NEXT30", 16)
    offered = await discounts.offered(db, 16)
    assert offered is not None and (offered.kind, offered.percent) == ("next_purchase", 30)
    assert offered.next_discount_id is not None


async def test_dates_disabling_and_the_limit_refuse_with_their_reason(db: Database) -> None:
    now = datetime.now(UTC)
    await new_code(db, "LATER", Kind.DAYS, 1, valid_from=now + timedelta(days=1))
    await new_code(db, "GONE", Kind.DAYS, 1, valid_until=now - timedelta(seconds=1))
    await new_code(db, "ONE", Kind.DAYS, 1, max_activations=1)
    await new_code(db, "OFF", Kind.DAYS, 1)
    assert await store.disable(db, "OFF", actor=ADMIN) is not None
    assert (await activate(db, "LATER", 17)).refusal is Refusal.NOT_YET
    assert (await activate(db, "GONE", 17)).refusal is Refusal.EXPIRED
    assert (await activate(db, "OFF", 17)).refusal is Refusal.DISABLED
    assert (await activate(db, "ONE", 17)).refusal is None
    assert (await activate(db, "ONE", 18)).refusal is Refusal.EXHAUSTED
    assert await scalar(db, "select count(*) from promo_activations") == 1


async def test_new_users_only_means_never_paid(db: Database) -> None:
    await new_code(db, "NEWBIE", Kind.DAYS, 3, new_users_only=True)

    async def paid_once(conn: Connection) -> None:
        await users.ensure_user(conn, 19)
        await conn.execute(
            "insert into payments (user_id, provider, external_id, amount_minor, currency,"
            " status, purpose, plan_id, paid_at, finalized_at) values"
            " (19, 'balance', 'x', 100, 'RUB', 'finalized', 'renewal', 'month', now(), now())"
        )

    await db.transaction(paid_once)
    assert (await activate(db, "NEWBIE", 19)).refusal is Refusal.NOT_NEW
    assert (await activate(db, "NEWBIE", 20)).refusal is None


async def test_without_subscription_ignores_a_trial_but_not_a_paid_one(db: Database) -> None:
    await new_code(db, "BACK", Kind.DAYS, 3, without_subscription=True)
    await new_code(db, "WEEK", Kind.DAYS, 7)
    trial = Terms("trial", "marzban", timedelta(days=1), None, 1)
    assert await subs.start_trial(db, 21, trial, max_attempts=3) is not None
    assert (await activate(db, "BACK", 21)).refusal is None
    await activate(db, "WEEK", 22)
    assert (await activate(db, "BACK", 22)).refusal is Refusal.HAS_SUBSCRIPTION


async def test_the_database_refuses_more_activations_than_the_limit(db: Database) -> None:
    code_id = await new_code(db, "CAP", Kind.DAYS, 1, max_activations=1)

    async def overfill(conn: Connection) -> None:
        await conn.execute("update promo_codes set activations = 2 where id = $1", code_id)

    with pytest.raises(asyncpg.CheckViolationError):
        await db.transaction(overfill)


async def test_admin_actions_are_written_to_the_audit_log(db: Database) -> None:
    await new_code(db, "AUDIT", Kind.BALANCE, 100, max_activations=5)
    assert await store.create(db, NewCode("AUDIT", Kind.DAYS, 1), actor=ADMIN) is None
    await store.disable(db, "AUDIT", actor=ADMIN)
    await store.disable(db, "AUDIT", actor=ADMIN)
    rows = await scalar(
        db,
        "select array_agg(action || ' ' || actor order by id) from audit_log"
        " where action like 'promo.%'",
    )
    assert rows == ["promo.create admin:7", "promo.disable admin:7"]


async def test_a_thousand_users_racing_for_the_last_slot_one_wins(db: Database) -> None:
    code_id = await new_code(db, "LAST", Kind.DAYS, 1, max_activations=3)
    for user_id in (1, 2):
        assert (await activate(db, "LAST", user_id)).refusal is None
    outcomes: list[Refusal | None] = []

    async def racer(user_id: int) -> None:
        outcomes.append((await activate(db, "LAST", user_id)).refusal)

    async with trio.open_nursery() as nursery:
        for user_id in range(1000, 2000):
            nursery.start_soon(racer, user_id)
    assert outcomes.count(None) == 1
    assert outcomes.count(Refusal.EXHAUSTED) == 999
    assert await scalar(db, "select activations from promo_codes where id = $1", code_id) == 3
    assert await scalar(db, "select count(*) from promo_activations") == 3
    assert await scalar(db, "select count(*) from subscriptions") == 3
    assert await scalar(db, "select count(*) from audit_log where action = 'promo.days'") == 3


async def test_fifty_attempts_of_one_user_activate_once(db: Database) -> None:
    await new_code(db, "SOLO", Kind.BALANCE, 700)
    outcomes: list[Refusal | None] = []

    async def attempt() -> None:
        outcomes.append((await activate(db, "SOLO", 31)).refusal)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(attempt)
    assert outcomes.count(None) == 1
    assert outcomes.count(Refusal.ALREADY_USED) == 49
    user = await users.get_user(db, 31)
    assert user is not None and user.balance_minor == 700
    assert await scalar(db, "select activations from promo_codes where code = 'SOLO'") == 1
