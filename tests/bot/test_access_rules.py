"""Access rules through the bot: closed registration, rules to accept, a required
channel, paused purchases; admins and payments are never held."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runtime.bot import TelegramBot
from runtime.bot import keyboards as kb
from runtime.storage import Database, gates, job_kinds, referrals

from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .recording import RecordingSession
from .test_handlers import USER, Driver, assert_translated, buttons, by_method, texts

MENU = f"User{USER}"
"""The main menu greets the user by name."""

Build = Callable[..., AsyncIterator[Driver]]


@pytest.fixture
async def gated(
    db: Database, panel: Any, crypto: Any, alerts: Alerts
) -> AsyncIterator[Callable[..., Driver]]:
    shops: list[Shop] = []

    def build(referrals: bool = False, **rules: Any) -> Driver:
        sections: dict[str, Any] = {"access_rules": rules}
        if referrals:
            sections["referrals"] = {"enabled": True}
        settings = make_settings("http://127.0.0.1:9", **sections)
        shop = build_shop(settings, db, panel, crypto, alerts)
        shops.append(shop)
        driver = Driver(shop, TelegramBot(shop.services), RecordingSession())
        driver._ids = itertools.count(1000 * len(shops))  # update ids are stored once
        return driver

    yield build
    for shop in shops:
        for closer in shop.closers:
            await closer.aclose()


async def test_closed_registration_turns_new_users_away_but_keeps_known_ones(
    gated: Callable[..., Driver],
) -> None:
    open_driver = gated()
    await open_driver.send(USER, "/start")  # known before registration closed
    driver = gated(registration="closed")
    assert MENU in texts(await driver.send(USER, "/start"))[0]
    calls = await driver.send(777, "/start")
    assert texts(calls) == ["Registration is closed for now. Thank you for your interest!"]
    calls = await driver.press(777, kb.Nav(to="trial"))
    assert by_method(calls, "answerCallbackQuery") and len(texts(calls)) == 1
    assert await driver.shop.value("select count(*) from subscriptions") == 0
    assert MENU[:-3] in texts(await driver.send(ADMIN, "/start"))[0]  # admins pass


RULES = {"en": "Be nice. No torrents.", "ru": "Ведите себя хорошо. Без торрентов."}


async def test_rules_are_accepted_once_per_version_before_anything_else(
    gated: Callable[..., Driver],
) -> None:
    driver = gated(rules=RULES)
    calls = await driver.send(USER, "/start")
    assert texts(calls) == ["Be nice. No torrents."]
    accept = next(b for b in buttons(calls) if b["callback_data"] == kb.GateCb(step="rules").pack())
    calls = await driver.press(USER, kb.Nav(to="trial"))  # nothing else until accepted
    assert texts(calls) == ["Be nice. No torrents."]
    assert await driver.shop.value("select count(*) from subscriptions") == 0
    calls = await driver.press(USER, accept["callback_data"])
    assert MENU in texts(calls)[0]
    calls = await driver.press(USER, kb.Nav(to="trial"))
    assert await driver.shop.value("select count(*) from subscriptions") == 1
    # new rules: accepted again, once
    newer = gated(rules=RULES, rules_version=2)
    assert texts(await newer.send(USER, "/help")) == ["Be nice. No torrents."]
    await newer.press(USER, kb.GateCb(step="rules"))
    assert "How it works" in texts(await newer.send(USER, "/help"))[0]
    version = await newer.shop.value(
        "select rules_accepted from users where telegram_id = $1", USER
    )
    assert version == 2
    calls = await newer.send(778, "/start", lang="ru")
    assert texts(calls) == ["Ведите себя хорошо. Без торрентов."]
    calls += await newer.press(778, kb.GateCb(step="rules"), lang="ru")
    assert_translated(calls)


async def test_the_channel_is_required_and_rechecked_when_it_is_stale(
    gated: Callable[..., Driver],
) -> None:
    driver = gated(channel="@vpn_news", channel_recheck_minutes=60)
    calls = await driver.send(USER, "/start")
    assert texts(calls) == ["To use this bot, join our channel first, then press “I joined”."]
    urls = [b.get("url") for b in buttons(calls)]
    assert "https://t.me/vpn_news" in urls
    (check,) = by_method(calls, "getChatMember")
    assert check.params == {"chat_id": "@vpn_news", "user_id": USER}
    calls = await driver.press(USER, kb.GateCb(step="channel"))
    assert texts(calls)[0].startswith("We could not find you in the channel yet.")
    driver.session.channel_members.add(USER)
    calls = await driver.press(USER, kb.GateCb(step="channel"))
    assert MENU in texts(calls)[0]
    calls = await driver.send(USER, "/help")  # trusted for an hour: no second check
    assert not by_method(calls, "getChatMember") and texts(calls)
    await driver.shop.value(
        "update users set channel_checked_at = now() - interval '2 hours'"
        " where telegram_id = $1 returning 1",
        USER,
    )
    driver.session.channel_members.discard(USER)  # left the channel
    calls = await driver.send(USER, "/help")
    assert by_method(calls, "getChatMember")
    assert texts(calls)[0].startswith("To use this bot, join our channel")


async def test_a_channel_telegram_cannot_check_lets_users_through(
    gated: Callable[..., Driver],
) -> None:
    from aiogram.exceptions import TelegramBadRequest
    from aiogram.methods import GetChatMember

    driver = gated(channel="@vpn_news")
    method = GetChatMember(chat_id="@vpn_news", user_id=USER)
    driver.session.fail_next(
        "getChatMember", TelegramBadRequest(method, "Bad Request: member list is inaccessible")
    )
    calls = await driver.send(USER, "/start")
    assert MENU in texts(calls)[0]


async def test_paused_purchases_wait_and_the_waiting_are_told_once_when_reopened(
    gated: Callable[..., Driver],
) -> None:
    driver = gated(purchases_paused=True)
    await driver.send(USER, "/start")
    paused = "Purchases are paused for now. We will send you a message here as soon as they reopen."
    assert texts(await driver.send(USER, "/buy")) == [paused]
    assert texts(await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))) == [paused]
    assert texts(await driver.press(USER, kb.Nav(to="plans"))) == [paused]
    assert not by_method(await driver.press(USER, kb.Nav(to="sub")), "sendInvoice")
    assert await driver.shop.value("select count(*) from payments") == 0
    assert texts(await driver.send(ADMIN, "/buy"))[0] != paused  # admins may buy

    db = driver.shop.db
    await driver.tb._announce_reopened()  # a start still paused tells nobody
    assert await driver.shop.value("select count(*) from outbox") == 0
    await gated().tb._announce_reopened()  # the start with purchases open
    assert await gates.announce_reopened(db) == 0
    jobs = await driver.shop.fetch(
        "select payload from outbox where kind = $1 and payload->>'template' = $2",
        job_kinds.NOTIFY,
        gates.REOPENED_TEMPLATE,
    )
    assert [j["payload"]["chat_id"] for j in jobs] == [USER]
    # paused again later: the user who asks again is told again, once
    await driver.send(USER, "/buy")
    assert await gates.announce_reopened(db) == 1


async def test_a_payment_is_credited_whatever_the_rules_say(
    gated: Callable[..., Driver],
) -> None:
    before = gated()
    calls = await before.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]
    driver = gated(purchases_paused=True, rules=RULES, rules_version=5, channel="@vpn_news")
    calls = await driver.pre_checkout(USER, payload, "XTR", 150)
    assert by_method(calls, "answerPreCheckoutQuery")[0].params["ok"] is True
    await driver.deliver(driver.payment_update(USER, payload, "XTR", 150, "charge-g1"))
    assert await driver.shop.value("select status from payments") == "finalized"


async def test_invite_only_admits_users_whose_first_start_was_an_invitation(
    gated: Callable[..., Driver],
) -> None:
    driver = gated(registration="invite_only", referrals=True)
    await driver.send(ADMIN, "/start")
    inviter_code = await referrals.code_of(driver.shop.db, ADMIN)
    calls = await driver.send(USER, "/start")
    invitation_only = "This bot is by invitation only: open the invitation link you were given."
    assert texts(calls) == [invitation_only]
    # first touch wins: a later invitation does not let in a user who started without one
    assert texts(await driver.send(USER, f"/start ref_{inviter_code}")) == [invitation_only]
    calls = await driver.send(778, f"/start ref_{inviter_code}")
    assert MENU[:-3] in texts(calls)[0]
    assert texts(await driver.send(778, "/help"))[0].startswith("How it works")
    assert await referrals.inviter_of(driver.shop.db, 778) == ADMIN


async def test_a_first_starts_invitation_counts_even_when_a_rule_holds_it(
    gated: Callable[..., Driver],
) -> None:
    driver = gated(rules=RULES, referrals=True)
    await driver.send(ADMIN, "/start")
    code = await referrals.code_of(driver.shop.db, ADMIN)
    assert texts(await driver.send(USER, f"/start ref_{code}")) == ["Be nice. No torrents."]
    assert await referrals.inviter_of(driver.shop.db, USER) == ADMIN


async def test_a_new_users_first_start_is_recorded_with_the_contact_itself(
    gated: Callable[..., Driver], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = gated(referrals=True)
    await driver.send(ADMIN, "/start")
    code = await referrals.code_of(driver.shop.db, ADMIN)
    separate: list[int] = []
    recorded = referrals.record_start

    async def counted(db: Database, user_id: int, **kwargs: Any) -> Any:
        separate.append(user_id)
        return await recorded(db, user_id, **kwargs)

    monkeypatch.setattr(referrals, "record_start", counted)
    for _ in range(3):
        assert MENU[:-3] in texts(await driver.send(USER, f"/start ref_{code}"))[0]
    assert separate == []  # one statement with the contact: no round trip of its own
    assert await referrals.inviter_of(driver.shop.db, USER) == ADMIN
