"""Referral and acquisition links end to end: the bot's actors, the referral worker and the
notifier under a supervisor, real aiogram against the Telegram emulator, real PostgreSQL.

Ann (in Russian) shares her link; Bob (in English) opens it, gets the longer trial of an
invited user and pays; Ann is told of her reward and sees it on her screen. An admin makes
an ad link; Carol opens it, takes the trial and pays; the link's figures count all three.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from runtime.i18n import load_translator
from runtime.storage import Database
from runtime.testing.telegram import SimUser, TelegramEmulator
from runtime.workers import notifier, referral_rewards
from tests.workers.conftest import fast

from . import test_e2e
from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .test_e2e import bot_settings, eventually, press, running, shown

emulator = test_e2e.emulator

REFERRALS: dict[str, Any] = {
    "enabled": True,
    "invited_trial_hours": 72,
    "levels": [{"reward": "days", "amount": 7}, {"reward": "fixed", "amount": 5000}],
}
LINK = re.compile(r"https://t\.me/\S+")
RAW_KEY = re.compile(r"\b(referrals|notify|menu|trial|errors|admin)\.[a-z_0-9]+\b")


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator
) -> AsyncIterator[Shop]:
    settings = make_settings(emulator.url, bot=bot_settings("polling"), referrals=REFERRALS)
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


def assert_translated(emulator: TelegramEmulator, user: SimUser) -> None:
    for entry in emulator.transcript(user.id):
        if entry.actor == "bot":
            for text in [entry.text or ""] + [b.text for row in entry.buttons for b in row]:
                assert not RAW_KEY.search(text), emulator.format_transcript(user.id)


async def start_by_link(emulator: TelegramEmulator, user: SimUser, link: str) -> Any:
    hello = emulator.open_link(user.id, link)
    return await user.wait_for_message(after=hello)


async def trial(emulator: TelegramEmulator, user: SimUser, menu: Any) -> None:
    label = load_translator().t(user.language_code or "en", "menu.trial")
    await press(emulator, user, menu, label, "free trial has started")


async def buy_with_stars(emulator: TelegramEmulator, shop: Shop, user: SimUser) -> None:
    hello = user.send_command("buy")
    plans = await user.wait_for_message(after=hello)
    plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
    user.press(plan, text="Telegram Stars")
    invoice = await user.wait_for_message(lambda m: m.invoice is not None)
    assert (await user.pay(invoice)).ok
    paid = "select count(*) from payments where user_id = $1 and status = 'finalized'"
    await eventually(shop, paid, 1, user.id)


async def test_a_friend_comes_by_the_link_pays_and_the_inviter_is_rewarded(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    tr = load_translator()
    ann = emulator.create_user(first_name="Anna", language_code="ru", username="anna")
    bob = emulator.create_user(first_name="Bob", language_code="en")
    workers = [
        fast(referral_rewards.spec(shop.services)),
        fast(notifier.spec(shop.services)),
    ]
    async with running(shop, extra=workers):
        hello = ann.send_command("start")
        menu = await ann.wait_for_message(after=hello)
        screen = await press(
            emulator, ann, menu, tr.t("ru", "referrals.menu_button"), "Ваша ссылка"
        )
        link = LINK.search(screen.content)
        assert link is not None and "vpn_test_bot?start=ref_" in link[0]

        menu = await start_by_link(emulator, bob, link[0])
        assert menu.content.startswith("Hi, Bob!")
        origin = "select invited_by from user_origins where user_id = $1"
        assert await shop.value(origin, bob.id) == ann.id
        await trial(emulator, bob, menu)
        length = "select expires_at - starts_at from subscriptions where user_id = $1"
        assert await shop.value(length, bob.id) == timedelta(hours=72)  # not the usual 24

        await buy_with_stars(emulator, shop, bob)
        told = await shown(emulator, ann, "продлён на 7", seconds=30)
        assert told.content == tr.t("ru", "notify.referral_reward_days", count=7)
        assert "7 дней" in told.content
        ann.send_command("referrals")
        mine = await shown(emulator, ann, "Приглашено: 1")
        assert "Оплатили: 1" in mine.content
        assert f"Заработано: {tr.t('ru', 'time.days', count=7)}" in mine.content
    days = "select expires_at - starts_at from subscriptions where user_id = $1"
    assert await shop.value(days, ann.id) == timedelta(days=7)
    granted = "select count(*) from audit_log where action like 'referral.%'"
    assert await shop.value(granted) == 1  # Ann has no inviter: no second level
    assert shop.alerts.alerts == []
    assert_translated(emulator, ann)
    assert_translated(emulator, bob)


async def test_an_ad_link_counts_its_start_trial_and_payment(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    carol = emulator.create_user(first_name="Carol", language_code="en")
    async with running(shop):
        hello = admin.send_command("adlink", "new Spring promo")
        made = await admin.wait_for_message(after=hello)
        link = LINK.search(made.content)
        assert link is not None and "Spring promo" in made.content
        code = link[0].rsplit("ad_", 1)[1]

        menu = await start_by_link(emulator, carol, link[0])
        await trial(emulator, carol, menu)
        await buy_with_stars(emulator, shop, carol)
        # a second start by an ad link changes nothing: first touch wins
        await start_by_link(emulator, carol, link[0])

        hello = admin.send_command("adlink", code)
        report = await admin.wait_for_message(after=hello)
        for line in ("Started the bot: 1", "Took the trial: 1", "Paid: 1", "150"):
            assert line in report.content, report.content
        hello = admin.send_command("adlink", "list")
        listed = await admin.wait_for_message(after=hello)
        assert f"Spring promo ({code}): 1 / 1 / 1" in listed.content

        hello = admin.send_command("admin")
        menu = await admin.wait_for_message(after=hello)
        stats = await press(emulator, admin, menu, "🤝 Referrals", "Invited users: 0")
        assert "Nobody has invited anyone yet." in stats.content
    assert await shop.value("select count(*) from ad_links") == 1
    entry = "select actor from audit_log where action = 'adlink.create'"
    assert await shop.value(entry) == f"admin:{ADMIN}"
    assert_translated(emulator, admin)
    assert_translated(emulator, carol)
