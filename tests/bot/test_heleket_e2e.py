"""End to end with Heleket: the bot's checkout button, the user paying on Heleket's page
(the fake), and Heleket's webhook over real HTTP on loopback: delivered twice, credited
once; a forged delivery changes nothing. Heleket cannot refund through its API for us, so
an admin refunds by hand and records it, once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette

from plugins.heleket import HeleketProvider
from runtime.billing import Billing, payment_webhook_routes
from runtime.catalog import Catalog
from runtime.failures import DomainError
from runtime.storage import Database
from runtime.supervision import ActorSpec
from runtime.testing.fakes.heleket import FakeHeleket, php_json, webhook_sign
from runtime.testing.telegram import TelegramEmulator
from runtime.web import HttpEndpoint

from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .test_e2e import (
    bot_settings,
    emulator,
    eventually,
    free_port,
    newest,
    press,
    running,
    shown,
)

__all__ = ["emulator"]

PRICE = {"USD": 500}


@pytest.fixture
async def heleket() -> AsyncIterator[FakeHeleket]:
    fake = FakeHeleket()
    async with fake.running():
        yield fake


@pytest.fixture
async def shop(
    db: Database,
    panel: Any,
    crypto: Any,
    alerts: Alerts,
    emulator: TelegramEmulator,
    heleket: FakeHeleket,
) -> AsyncIterator[Shop]:
    plan = {
        "title": {"en": "1 month", "ru": "1 месяц"},
        "duration_days": 30,
        "backend": "marzban",
        "prices": {"stars": {"XTR": 150}, "heleket": PRICE},
    }
    settings = make_settings(emulator.url, bot=bot_settings("polling"), plans={"month": plan})
    shop = build_shop(settings, db, panel, crypto, alerts)
    provider = HeleketProvider(heleket.merchant, heleket.api_key, base_url=f"{heleket.url}/")
    providers = {**shop.billing.providers, "heleket": provider}
    billing = Billing(
        db, Catalog.from_settings(settings), providers, alerts, balance_currency="RUB"
    )
    shop.services.provide_domain(billing, shop.access)
    shop.closers.append(provider)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


async def test_paying_through_heleket_from_the_checkout_button(
    emulator: TelegramEmulator, shop: Shop, heleket: FakeHeleket
) -> None:
    port = free_port()
    routes = payment_webhook_routes(
        lambda: shop.billing, providers=[shop.billing.provider("heleket")]
    )
    web = HttpEndpoint(lambda: Starlette(routes=routes), host="127.0.0.1", port=port)
    heleket.webhook_url = f"http://127.0.0.1:{port}/webhooks/payments/heleket"
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop, extra=[ActorSpec("http", web.run)]):
        hello = user.send_command("start")
        menu = await user.wait_for_message(after=hello)
        plans = await press(emulator, user, menu, "Buy VPN", "Choose a plan")
        plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
        user.press(plan, text="Crypto (Heleket)")
        link = await emulator.wait_until(
            newest(emulator, user, lambda m: any(b.url for row in m.buttons() for b in row)),
            what="a payment link",
        )
        intent = await shop.value("select id::text from payments where provider = 'heleket'")
        invoice = heleket.invoice_for(intent)
        assert link.button("Pay").url == invoice["url"]

        # a forged delivery: another key's signature, naming the real invoice
        forged = {"type": "payment", "uuid": invoice["uuid"], "order_id": intent,
                  "status": "paid", "amount": "5"}  # fmt: skip
        forged["sign"] = webhook_sign(forged, "not-the-merchants-key")
        async with httpx.AsyncClient() as client:
            with trio.fail_after(60):
                while True:  # the endpoint starts with the supervisor
                    try:
                        answer = await client.post(heleket.webhook_url, content=php_json(forged))
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
        assert answer.status_code == 401
        assert await shop.value("select status from payments") == "invoiced"

        heleket.pay(invoice["uuid"])
        await heleket.deliver_webhook(invoice["uuid"], copies=2)  # Heleket delivers again
        await eventually(shop, "select count(*) from payments where status = 'finalized'", 1)
        await emulator.wait_drained()
        rows = await shop.fetch("select provider, status, amount_minor, currency from payments")
        assert rows == [
            {"provider": "heleket", "status": "finalized", "amount_minor": 500, "currency": "USD"}
        ]
        assert await shop.value("select count(*) from subscriptions where kind = 'paid'") == 1

        # the admin refunds it: by hand, then recorded here
        admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
        hello = admin.send_command("user", str(user.id))
        card = await admin.wait_for_message(after=hello)
        pressed = admin.press(card, text="Refund")
        await emulator.wait_for_answer(pressed)
        confirm = await shown(emulator, admin, f"Refund payment {intent}?")
        by_hand = await press(emulator, admin, confirm, "Confirm", "cannot refund payment")
        await press(emulator, admin, by_hand, "Confirm", "was refunded")
        await eventually(shop, "select status from payments", "refunded")
        with pytest.raises(DomainError, match="not a credited"):
            await shop.billing.refund(intent, through_provider=False)  # a second record
        await emulator.wait_drained()

    assert heleket.webhook_results == [200, 200]
    assert await shop.value("select status from subscriptions where kind = 'paid'") == "revoked"
    assert shop.alerts.alerts == []
    (created,) = [call for call in heleket.calls("POST") if call.path == "/v1/payment"]
    assert json.loads(created.body)["order_id"] == intent
