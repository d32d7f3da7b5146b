"""Plans limited to a group of users: listed, priced and sold to that group only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.bot import TelegramBot
from runtime.bot import keyboards as kb
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Database, referrals

from .conftest import Alerts, Shop, build_shop, make_settings
from .recording import RecordingSession
from .test_handlers import Driver, by_method, labels

NEWCOMER, REGULAR = 801, 802

PLANS = {
    "month": {
        "title": {"en": "1 month"},
        "duration_days": 30,
        "backend": "marzban",
        "prices": {"stars": {"XTR": 150}},
        "order": 2,
    },
    "intro": {
        "title": {"en": "Intro week"},
        "duration_days": 7,
        "backend": "marzban",
        "prices": {"stars": {"XTR": 10}, "card": {"RUB": 100}},
        "audience": ["new"],
        "order": 1,
    },
}


@pytest.fixture
async def shop(db: Database, panel: Any, crypto: Any, alerts: Alerts) -> AsyncIterator[Shop]:
    shop = build_shop(make_settings("http://127.0.0.1:9", plans=PLANS), db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@pytest.fixture
def driver(shop: Shop) -> Driver:
    return Driver(shop, TelegramBot(shop.services), RecordingSession())


async def test_a_plan_for_new_users_is_theirs_only(driver: Driver, shop: Shop) -> None:
    checkout = await shop.billing.buy(REGULAR, "month", "stars")
    await shop.billing.confirm(ConfirmedPayment("stars", "c1", checkout.payment.id, 150, "XTR"))

    newcomer = labels(await driver.send(NEWCOMER, "/buy"))
    assert [label.split(" · ")[0] for label in newcomer[:2]] == ["Intro week", "1 month"]
    regular = labels(await driver.send(REGULAR, "/buy"))
    assert not any("Intro week" in label for label in regular)
    assert any("1 month" in label for label in regular)

    # a stale or forged button of the plan: nothing is sold
    calls = await driver.press(REGULAR, kb.BuyCb(plan="intro", provider="stars"))
    assert not by_method(calls, "sendInvoice")
    assert await shop.value("select count(*) from payments where plan_id = 'intro'") == 0
    calls = await driver.press(NEWCOMER, kb.BuyCb(plan="intro", provider="stars"))
    assert by_method(calls, "sendInvoice")
    assert await shop.value("select count(*) from payments where plan_id = 'intro'") == 1


async def test_a_plan_for_invited_users_is_theirs_only(
    db: Database, panel: Any, crypto: Any, alerts: Alerts
) -> None:
    plans = {**PLANS, "friends": {**PLANS["intro"], "title": {"en": "Friends"}}}
    plans["friends"]["audience"] = ["invited"]
    settings = make_settings("http://127.0.0.1:9", plans=plans, referrals={"enabled": True})
    shop = build_shop(settings, db, panel, crypto, alerts)
    driver = Driver(shop, TelegramBot(shop.services), RecordingSession())
    try:
        await driver.send(REGULAR, "/start")
        code = await referrals.code_of(db, REGULAR)
        await driver.send(NEWCOMER, f"/start ref_{code}")
        assert any("Friends" in label for label in labels(await driver.send(NEWCOMER, "/buy")))
        assert not any("Friends" in label for label in labels(await driver.send(REGULAR, "/buy")))
        calls = await driver.press(REGULAR, kb.BuyCb(plan="friends", provider="stars"))
        assert not by_method(calls, "sendInvoice")
    finally:
        for closer in shop.closers:
            await closer.aclose()
