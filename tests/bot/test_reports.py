"""The period report on a real PostgreSQL, and through the bot."""

from __future__ import annotations

from typing import Any

from runtime.bot import keyboards as kb
from runtime.storage import Connection, Database, grants, reports, users

from . import test_handlers
from .conftest import ADMIN, Shop
from .test_handlers import USER, Driver, assert_translated, buttons, texts

shop = test_handlers.shop
driver = test_handlers.driver


async def run(db: Database, sql: str, *args: Any) -> None:
    async def unit(conn: Connection) -> None:
        await conn.execute(sql, *args)

    await db.transaction(unit)


async def paid(db: Database, user_id: int, *, days_ago: float, amount: int = 19900) -> None:
    await run(
        db,
        "insert into payments (user_id, provider, external_id, amount_minor, currency, status,"
        " purpose, plan_id, finalized_at, paid_at) values ($1, 'card', $2, $3, 'RUB',"
        " 'finalized', 'subscription', 'month', now() - make_interval(days => $4),"
        " now() - make_interval(days => $4))",
        user_id,
        f"c-{user_id}-{days_ago}",
        amount,
        int(days_ago),
    )


async def subscription(db: Database, user_id: int, *, ends_in_days: int) -> None:
    await run(
        db,
        "insert into subscriptions (user_id, plan_id, kind, starts_at, expires_at, vpn_backend,"
        " status) values ($1, 'month', 'paid', now() - interval '30 days',"
        " now() + make_interval(days => $2), 'marzban', 'active')",
        user_id,
        ends_in_days,
    )


async def test_the_report_counts_conversions_churn_income_and_grants(db: Database) -> None:
    for uid in (1, 2, 3, 4):
        await users.touch_user(db, uid, username=None, language="en")
    await run(db, "update users set created_at = now() - interval '20 days' where telegram_id = 4")
    # 1: a trial, then a first purchase; 2: bought straight away; 4: bought 20 days ago
    await run(
        db, "update users set trial_used_at = now() - interval '2 days' where telegram_id = 1"
    )
    await paid(db, 1, days_ago=1)
    await paid(db, 2, days_ago=3)
    await paid(db, 4, days_ago=20)
    await paid(db, 4, days_ago=2)  # a renewal, not a first purchase
    await subscription(db, 1, ends_in_days=29)
    await subscription(db, 3, ends_in_days=-3)  # ended 3 days ago, nothing since: churned

    async def reward(conn: Connection) -> None:
        await grants.grant_balance(
            conn,
            user_id=2,
            amount_minor=500,
            key="referral:x:1",
            actor=grants.SYSTEM,
            action="referral.balance",
        )
        await grants.grant_days(
            conn,
            user_id=3,
            days=7,
            backend="marzban",
            key="promo:1:3",
            actor=grants.user_actor(3),
            action="promo.days",
        )

    await db.transaction(reward)

    week = await reports.report(db, "week")
    assert (week.new_users, week.trials, week.first_purchases, week.from_trial) == (3, 1, 2, 1)
    assert (week.active_paid, week.churned, week.refunds) == (2, 0, 0)  # 3 got 7 days back
    assert [(i.provider, i.amount_minor, i.payments) for i in week.income] == [
        ("card", 3 * 19900, 3)
    ]
    assert [(g.kind, g.count, g.users, g.days, g.balance_minor) for g in week.grants] == [
        ("promo", 1, 1, 7, 0),
        ("referral", 1, 1, 0, 500),
    ]
    day = await reports.report(db, "day")
    assert (day.new_users, day.first_purchases, day.income) == (3, 0, ())
    month = await reports.report(db, "month")
    assert (month.new_users, month.first_purchases) == (4, 3)


async def test_a_user_whose_paid_access_ended_unrenewed_counts_as_churned(db: Database) -> None:
    await users.touch_user(db, 5, username=None, language="en")
    await users.touch_user(db, 6, username=None, language="en")
    await subscription(db, 5, ends_in_days=-2)
    await subscription(db, 6, ends_in_days=-2)
    await subscription(db, 6, ends_in_days=28)  # renewed
    assert (await reports.report(db, "week")).churned == 1
    assert (await reports.report(db, "day")).churned == 0


async def test_admins_read_the_report_and_switch_its_period(driver: Driver, shop: Shop) -> None:
    await driver.press(USER, kb.Nav(to="trial"))
    calls = await driver.send(ADMIN, "/report")
    (text,) = texts(calls)
    assert text.startswith("Report for the last 7 days\nNew users: 2\nTrials started: 1")
    month = next(b for b in buttons(calls) if b["callback_data"].endswith(":month:0"))
    calls = await driver.press(ADMIN, month["callback_data"])
    assert texts(calls)[0].startswith("Report for the last 30 days")
    calls = await driver.send(ADMIN, "/report year")
    assert texts(calls) == ["Usage: /report day, /report week or /report month"]
    calls = await driver.press(ADMIN, kb.AdminCb(action="report", arg="year"))
    assert [c.method for c in calls] == ["answerCallbackQuery"]
    calls = await driver.send(ADMIN, "/report month", lang="ru")
    calls += await driver.send(ADMIN, "/admin", lang="ru")
    assert_translated(calls)
    stale = await driver.send(USER, "/report")
    assert "report" not in texts(stale)[0].lower()
