"""Paying with YooKassa through the bot: the checkout button gives the payment page's link,
the fake YooKassa's notification (sent twice) credits once, and a forged one changes
nothing; all against the Telegram emulator and the fake YooKassa on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from plugins.yookassa import YooKassaProvider
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.plugin_api.payments import WebhookRejected
from runtime.storage import Database
from runtime.testing.fakes.yookassa import FakeYooKassa
from runtime.testing.telegram import TelegramEmulator

from .conftest import Alerts, Shop, build_shop, make_settings
from .test_e2e import bot_settings, emulator, eventually, newest, press, running

__all__ = ["emulator"]  # the emulator fixture, served on loopback

SHOP, SECRET = "445566", "test_JourneySecretKey_0042"


@pytest.fixture
async def yookassa() -> AsyncIterator[FakeYooKassa]:
    fake = FakeYooKassa(SHOP, SECRET)
    async with fake.running():
        yield fake


@asynccontextmanager
async def yookassa_shop(
    db: Database,
    panel: Any,
    crypto: Any,
    alerts: Alerts,
    emulator: TelegramEmulator,
    yookassa: FakeYooKassa,
    *,
    prices: dict[str, dict[str, int]],
    saved_methods: bool = False,
) -> AsyncIterator[Shop]:
    """A shop selling the month at ``prices``, with YooKassa (the fake) among its providers."""
    plan = {
        "title": {"en": "1 month", "ru": "1 месяц"},
        "duration_days": 30,
        "backend": "marzban",
        "prices": prices,
    }
    settings = make_settings(emulator.url, bot=bot_settings("polling"), plans={"month": plan})
    shop = build_shop(settings, db, panel, crypto, alerts)
    provider = YooKassaProvider(
        SHOP, SECRET, base_url=f"{yookassa.url}/v3/", saved_methods=saved_methods
    )
    providers = {**shop.billing.providers, "yookassa": provider}
    billing = Billing(
        db, Catalog.from_settings(settings), providers, alerts, balance_currency="RUB"
    )
    shop.services.provide_domain(billing, shop.access)
    shop.closers.append(provider)
    try:
        yield shop
    finally:
        for closer in shop.closers:
            await closer.aclose()


@pytest.fixture
async def shop(
    db: Database,
    panel: Any,
    crypto: Any,
    alerts: Alerts,
    emulator: TelegramEmulator,
    yookassa: FakeYooKassa,
) -> AsyncIterator[Shop]:
    prices = {"stars": {"XTR": 150}, "yookassa": {"RUB": 19900}}
    async with yookassa_shop(db, panel, crypto, alerts, emulator, yookassa, prices=prices) as shop:
        yield shop


async def test_paying_with_yookassa_from_the_checkout_button(
    emulator: TelegramEmulator, shop: Shop, yookassa: FakeYooKassa
) -> None:
    user = emulator.create_user(first_name="Ann", language_code="en", username="ann")
    async with running(shop):
        hello = user.send_command("buy")
        plans = await user.wait_for_message(after=hello)
        plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
        user.press(plan, text="YooKassa")
        link = await emulator.wait_until(
            newest(emulator, user, lambda m: any(b.url for row in m.buttons() for b in row)),
            what="a payment link",
        )
        intent = await shop.value("select id::text from payments where provider = 'yookassa'")
        payment = yookassa.payment_for(intent)
        (url,) = [b.url for row in link.buttons() for b in row if b.url]
        assert url == payment["confirmation"]["confirmation_url"]
        assert "₽199.00" in link.content
        sent = yookassa.calls("POST", "/v3/payments")[-1]
        assert sent.headers["idempotence-key"] == intent

        # a forged notification while the payment is still pending changes nothing
        forged = json.dumps(
            {"type": "notification", "event": "payment.succeeded", "object": payment}
        ).encode()
        with pytest.raises(WebhookRejected):
            await shop.billing.webhook("yookassa", {}, forged)
        assert await shop.value("select status from payments where id = $1::uuid", intent) == (
            "invoiced"
        )

        yookassa.pay(payment["id"])
        for _ in range(2):  # YooKassa delivers again when it is not sure
            await shop.billing.webhook("yookassa", *yookassa.notification(payment["id"]))
        await eventually(
            shop, "select status from payments where id = $1::uuid", "finalized", intent
        )
        await emulator.wait_drained()
    assert await shop.value("select count(*) from subscriptions where kind = 'paid'") == 1
    assert await shop.value("select count(*) from payments where status = 'finalized'") == 1
    assert shop.alerts.alerts == []
