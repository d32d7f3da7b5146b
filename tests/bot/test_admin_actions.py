"""The admin's user editor through the bot: set an expiry, change or give a plan, reset
traffic or devices, as commands and as the user card's buttons. Each happens once per
update (an update handled again changes nothing), is in the audit log, reaches no one
but admins, and malformed arguments or forged buttons change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from runtime.bot import keyboards as kb
from runtime.bot.handlers.admin_actions import GiveCb, parse_day
from runtime.i18n import load_translator
from runtime.storage import Database, job_kinds
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban

from . import test_handlers
from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .test_handlers import USER, Driver, assert_translated, buttons, texts
from .test_moderation import run_again

driver = test_handlers.driver
GIB = 2**30


@pytest.fixture
async def shop(
    db: Database, panel: FakeMarzban, crypto: FakeCryptoBot, alerts: Alerts
) -> AsyncIterator[Shop]:
    plans = {
        "month": {
            "title": {"en": "1 month", "ru": "1 месяц"},
            "duration_days": 30,
            "backend": "marzban",
            "prices": {"stars": {"XTR": 150}},
            "traffic_limit_gb": 100,
        },
        "big": {
            "title": {"en": "Big", "ru": "Большой"},
            "duration_days": 90,
            "backend": "marzban",
            "prices": {"stars": {"XTR": 400}},
            "traffic_limit_gb": 500,
        },
    }
    shop = build_shop(make_settings("http://127.0.0.1:9", plans=plans), db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


async def audit(shop: Shop) -> list[dict[str, Any]]:
    return await shop.fetch("select action, actor, grant_key, reason from audit_log order by id")


async def subscription_of(shop: Shop) -> dict[str, Any]:
    (row,) = await shop.fetch("select * from subscriptions where user_id = $1", USER)
    return row


async def test_an_expiry_is_set_once_per_update(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    update = driver.message(ADMIN, text=f"/setexpiry @user{USER} 2031-05-17 moved by support")
    (text,) = texts(await driver.deliver(update))
    assert text.startswith(f"Done: user {USER} had no subscription; #1 was started")
    assert "May 17, 2031" in text
    await run_again(shop, update["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    row = await subscription_of(shop)
    assert row["expires_at"].isoformat() == "2031-05-17T23:59:59+00:00"
    assert await audit(shop) == [
        {
            "action": "subscription.set_expiry",
            "actor": f"admin:{ADMIN}",
            "grant_key": f"update:{update['update_id']}",
            "reason": "moved by support",
        }
    ]
    (text,) = texts(await driver.send(ADMIN, f"/setexpiry {USER} 2032-01-02"))
    assert text.startswith("Done: subscription #1 of user 501 now ends Jan 2, 2032")
    assert await shop.value("select count(*) from outbox where kind = $1", job_kinds.ACTIVATE) == 2

    (text,) = texts(await driver.send(ADMIN, f"/setexpiry {USER} 2020-01-01 chargeback"))
    assert (
        text == f"Done: the date is past, so the access of user {USER} ended now (1 subscription)."
    )
    assert (await subscription_of(shop))["status"] == "revoked"
    revocations = await shop.value("select count(*) from outbox where kind = $1", job_kinds.REVOKE)
    assert revocations == 1


async def test_a_plan_is_given_then_changed_once_per_update_and_reaches_the_panel(
    driver: Driver, shop: Shop
) -> None:
    await driver.send(USER, "/start")
    give = driver.message(ADMIN, text=f"/giveplan {USER} month a gift")
    (text,) = texts(await driver.deliver(give))
    assert text.startswith(f"Done: user {USER} got plan month for free: subscription #1")
    await run_again(shop, give["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    assert await shop.access.activate_batch("test") == 1
    name = (await subscription_of(shop))["vpn_account"]
    assert shop.panel.users[name]["data_limit"] == 100 * GIB
    ready = await shop.fetch(
        "select payload from outbox where payload->>'template' = 'access_ready'"
    )
    assert [r["payload"]["chat_id"] for r in ready] == [USER]

    change = driver.message(ADMIN, text=f"/setplan {USER} BIG")
    (text,) = texts(await driver.deliver(change))
    assert text.startswith(f"Done: subscription #1 of user {USER} is now on plan big")
    await run_again(shop, change["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    before = await subscription_of(shop)
    assert await shop.access.activate_batch("test") == 1
    assert shop.panel.users[name]["data_limit"] == 500 * GIB
    after = await subscription_of(shop)
    assert (after["plan_id"], after["expires_at"]) == ("big", before["expires_at"])
    (text,) = texts(await driver.send(ADMIN, f"/setplan {USER} big"))
    assert text == f"Subscription #1 of user {USER} is on plan big already."
    actions = [e["action"] for e in await audit(shop)]
    assert actions == ["plan.give", "subscription.set_plan", "subscription.set_plan"]
    (history,) = texts(await driver.send(ADMIN, f"/history {USER}"))
    assert "plan changed" in history and "plan given (+30 days)" in history


async def test_refusals_are_answered_and_record_nothing(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    calls = await driver.send(ADMIN, f"/setplan {USER} big")
    calls += await driver.send(ADMIN, f"/giveplan {USER} nope")
    calls += await driver.send(ADMIN, f"/resettraffic {USER}")
    calls += await driver.send(ADMIN, f"/resetdevices {USER}")
    calls += await driver.send(ADMIN, "/giveplan @nobody month")
    assert texts(calls) == [
        f"User {USER} has no running paid subscription.",
        "No plan nope. Plans: month, big",
        f"User {USER} has no running subscription.",
        f"User {USER} has no running subscription.",
        "No user @nobody.",
    ]
    await driver.send(ADMIN, f"/giveplan {USER} month")
    (text,) = texts(await driver.send(ADMIN, f"/resetdevices {USER}"))
    unsupported = f"The panel of subscription #1 of user {USER} keeps no devices"
    assert text == unsupported + ": there is nothing to reset."
    assert [e["action"] for e in await audit(shop)] == ["plan.give"]


async def test_traffic_is_reset_once_per_update(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    await driver.send(ADMIN, f"/giveplan {USER} month")
    before = await subscription_of(shop)
    update = driver.message(ADMIN, text=f"/resettraffic {USER} streaming weekend")
    (text,) = texts(await driver.deliver(update))
    assert text.startswith(f"Done: a new traffic period of subscription #1 of user {USER}")
    period = (await subscription_of(shop))["period_started_at"]
    assert period > before["period_started_at"]
    await run_again(shop, update["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    assert (await subscription_of(shop))["period_started_at"] == period
    told = await shop.fetch(
        "select payload from outbox where payload->>'template' = 'admin_actions_traffic_reset'"
    )
    assert len(told) == 1
    assert (await audit(shop))[-1]["reason"] == "streaming weekend"


async def test_the_user_cards_buttons_confirm_then_act_once(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    card = await driver.send(ADMIN, f"/user {USER}")
    by_label = {b["text"]: b["callback_data"] for b in buttons(card)}
    choose = await driver.press(ADMIN, by_label["🎁 Give a plan"])
    assert texts(choose) == [f"Which plan to give to user {USER}?"]
    plan = next(b for b in buttons(choose) if b["text"] == "Big (big)")
    confirm = await driver.press(ADMIN, plan["callback_data"])
    assert texts(confirm) == [f"Give plan big to user {USER} for free?"]
    assert await audit(shop) == []  # nothing before the confirmation
    yes = next(b for b in buttons(confirm) if b["text"] == "✅ Confirm")
    (text,) = texts(await driver.press(ADMIN, yes["callback_data"]))
    assert text.startswith(f"Done: user {USER} got plan big for free")

    confirm = await driver.press(ADMIN, by_label["🔄 Reset traffic"])
    assert texts(confirm)[0].startswith(f"Reset the traffic of user {USER}?")
    yes = next(b for b in buttons(confirm) if b["text"] == "✅ Confirm")
    (text,) = texts(await driver.press(ADMIN, yes["callback_data"]))
    assert text.startswith("Done: a new traffic period")

    confirm = await driver.press(ADMIN, by_label["📱 Reset devices"])
    assert texts(confirm) == [f"Sign out every device of user {USER}?"]
    yes = next(b for b in buttons(confirm) if b["text"] == "✅ Confirm")
    (text,) = texts(await driver.press(ADMIN, yes["callback_data"]))
    assert "keeps no devices" in text
    assert [e["action"] for e in await audit(shop)] == ["plan.give", "traffic.reset"]


async def test_two_taps_on_one_confirmation_act_once(driver: Driver, shop: Shop) -> None:
    """A double tap is two updates: the key is the confirmation screen's, not the tap's."""
    await driver.send(USER, "/start")
    card = await driver.send(ADMIN, f"/user {USER}")
    by_label = {b["text"]: b["callback_data"] for b in buttons(card)}
    for opener, choice in ((by_label["🎁 Give a plan"], "1 month (month)"), (None, None)):
        if opener is None:
            confirm = await driver.press(ADMIN, by_label["🔄 Reset traffic"])
        else:
            plans = await driver.press(ADMIN, opener)
            chosen = next(b for b in buttons(plans) if b["text"] == choice)
            confirm = await driver.press(ADMIN, chosen["callback_data"])
        yes = next(b for b in buttons(confirm) if b["text"] == "✅ Confirm")
        (first,) = texts(await driver.press(ADMIN, yes["callback_data"]))
        (second,) = texts(await driver.press(ADMIN, yes["callback_data"]))
        assert first.startswith("Done:") and second == "This was done already."
    row = await subscription_of(shop)
    assert row["expires_at"] - row["starts_at"] < timedelta(days=31)  # one month given
    assert [e["action"] for e in await audit(shop)] == ["plan.give", "traffic.reset"]
    # a new confirmation screen is a new action
    confirm = await driver.press(ADMIN, by_label["🔄 Reset traffic"])
    yes = next(b for b in buttons(confirm) if b["text"] == "✅ Confirm")
    assert texts(await driver.press(ADMIN, yes["callback_data"]))[0].startswith("Done:")


@pytest.mark.parametrize(
    "command",
    [
        "/setexpiry",
        f"/setexpiry {USER}",
        f"/setexpiry {USER} tomorrow",
        f"/setexpiry {USER} 2031-02-30",
        f"/setexpiry {USER} 2031-5-1",
        f"/setexpiry {USER} 9999-01-01",
        f"/setexpiry {USER} 1999-12-31",
        f"/setexpiry {USER}2031-01-01",
        "/setplan",
        f"/setplan {USER}",
        f"/setplan {USER} bad-plan!",
        f"/setplan {USER} {'x' * 40}",
        "/giveplan",
        "/giveplan '; drop table users; -- month",
        "/resettraffic",
        "/resetdevices",
    ],
)
async def test_malformed_arguments_change_nothing(driver: Driver, shop: Shop, command: str) -> None:
    await driver.send(USER, "/start")
    (text,) = texts(await driver.send(ADMIN, command))
    assert text.startswith("Usage: /"), text
    assert await audit(shop) == []
    assert await shop.value("select count(*) from outbox") == 0
    assert await shop.value("select count(*) from subscriptions") == 0


async def test_non_admins_reach_none_of_it(driver: Driver, shop: Shop) -> None:
    unknown = load_translator().t("en", "errors.unknown_command")
    await driver.send(USER, "/start")
    for command in (
        f"/setexpiry {USER} 2031-01-01",
        f"/setplan {USER} big",
        f"/giveplan {USER} big",
        f"/resettraffic {USER}",
        f"/resetdevices {USER}",
    ):
        assert texts(await driver.send(USER, command)) == [unknown], command
    for data in (
        kb.AdminCb(action="aeg", arg=str(USER)),
        GiveCb(plan="big", uid=USER),
        GiveCb(plan="big", uid=USER, screen=3),
        kb.AdminCb(action="aet", arg=str(USER)),
        kb.AdminCb(action="aety", arg=str(USER), n=3),
        kb.AdminCb(action="aedy", arg=str(USER), n=3),
    ):
        calls = await driver.press(USER, data)
        assert [c.method for c in calls] == ["answerCallbackQuery"], data
    assert await audit(shop) == []
    assert await shop.value("select count(*) from subscriptions") == 0


async def test_forged_buttons_change_nothing(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    for data in (
        "adm:aety:abc:3",
        f"adm:aety:{'9' * 19}:3",
        "adm:aety:-5:3",
        f"adm:aety:{USER}:0",
        f"adm:aety:{USER}:-3",
        f"adm:aedy:{USER}:{2**64}",
        "ag:NOPE!:501:3",
        "ag:big:-1:3",
        f"ag:big:{2**64}:3",
        "ag:big:501:-3",
        "ag:big:x:3",
        "ag:big:501",
        "adm:aeg::0",
    ):
        calls = await driver.press(ADMIN, data)
        assert calls, data
        assert {c.method for c in calls} <= {"answerCallbackQuery", "editMessageText"}, data
    assert await audit(shop) == []
    assert await shop.value("select count(*) from subscriptions") == 0
    assert shop.alerts.alerts == []
    unsettled = "select count(*) from telegram_updates where processed_at is null"
    assert await shop.value(unsettled) == 0


async def test_answers_and_help_are_translated(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    calls = await driver.send(ADMIN, f"/giveplan {USER} month", lang="ru")
    calls += await driver.send(ADMIN, f"/resettraffic {USER}", lang="ru")
    calls += await driver.send(ADMIN, "/setexpiry", lang="ru")
    calls += await driver.send(ADMIN, f"/user {USER}", lang="ru")
    calls += await driver.press(ADMIN, kb.AdminCb(action="help"), lang="ru")
    assert_translated(calls)
    shown = "\n".join(texts(calls))
    assert "admin_actions." not in shown and "Готово" in shown and "/resetdevices" in shown
    assert all(len(text) <= 4096 for text in texts(calls))


def test_a_date_is_a_calendar_day_within_ten_years() -> None:
    from datetime import date

    today = date(2026, 12, 3)
    assert parse_day("2031-05-17", today=today) == date(2031, 5, 17)
    assert parse_day("2020-01-01", today=today) == date(2020, 1, 1)
    assert parse_day("2036-11-30", today=today) == date(2036, 11, 30)
    assert parse_day("2037-01-01", today=today) is None
    assert parse_day("2031-02-29", today=today) is None
    assert parse_day("1999-12-31", today=today) is None
