"""Saving a card for auto-renewal through the bot, and removing it: the choice is a
button of its own next to the plain YooKassa one (nothing is saved without it), the
saved card shows in the settings, and removing it there revokes it; all against the
Telegram emulator and the fake YooKassa on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.storage import Database
from runtime.testing.fakes.yookassa import FakeYooKassa
from runtime.testing.telegram import TelegramEmulator

from .conftest import Alerts, Shop
from .test_e2e import emulator, eventually, newest, running, shown
from .test_yookassa_journey import yookassa, yookassa_shop

__all__ = ["emulator", "yookassa"]  # the fixtures, served on loopback

SAVING = "save card for auto-renewal"
WAIT = 60.0


@pytest.fixture
async def shop(
    db: Database,
    panel: Any,
    crypto: Any,
    alerts: Alerts,
    emulator: TelegramEmulator,
    yookassa: FakeYooKassa,
) -> AsyncIterator[Shop]:
    prices = {"yookassa": {"RUB": 19900}}
    async with yookassa_shop(
        db, panel, crypto, alerts, emulator, yookassa, prices=prices, saved_methods=True
    ) as shop:
        yield shop


async def pay_link(emulator: TelegramEmulator, user: Any, *, saving: bool) -> Any:
    """/buy, the month, and the chosen YooKassa button: the new payment link's message."""
    after = max((m.message_id for m in emulator.messages(user.id, from_bot=True)), default=0)

    def fresh(check: Any) -> Any:
        return newest(emulator, user, lambda m: m.message_id > after and check(m))

    hello = user.send_command("buy")
    plans = await user.wait_for_message(after=hello)
    await emulator.wait_for_answer(user.press(plans, text="1 month"))
    plan = await emulator.wait_until(
        fresh(lambda m: "Choose how to pay" in m.content), timeout=WAIT, what="pay options"
    )
    labels = [b.text for row in plan.buttons() for b in row]
    assert any(SAVING in label for label in labels), labels
    plain = [label for label in labels if "YooKassa" in label and SAVING not in label]
    user.press(plan, text=SAVING if saving else plain[0])
    return await emulator.wait_until(
        fresh(lambda m: any(b.url for row in m.buttons() for b in row)),
        timeout=WAIT,
        what="a payment link",
    )


async def test_the_card_is_saved_only_when_chosen_and_removed_in_the_settings(
    emulator: TelegramEmulator, shop: Shop, yookassa: FakeYooKassa
) -> None:
    user = emulator.create_user(first_name="Ann", language_code="en", username="ann")
    async with running(shop):
        # the plain button: paid, nothing saved
        await pay_link(emulator, user, saving=False)
        first = yookassa.calls("POST", "/v3/payments")[-1]
        assert b"save_payment_method" not in first.body
        intent = await shop.value("select id::text from payments order by created_at limit 1")
        payment = yookassa.payment_for(intent)
        yookassa.pay(payment["id"])
        await shop.billing.webhook("yookassa", *yookassa.notification(payment["id"]))
        await eventually(
            shop, "select status from payments where id = $1::uuid", "finalized", intent
        )
        assert await shop.value("select count(*) from saved_payment_methods") == 0

        # the saving button: the link's message says the card is saved, and it is
        link = await pay_link(emulator, user, saving=True)
        assert "The card you pay with is saved" in link.content
        sent = yookassa.calls("POST", "/v3/payments")[-1]
        assert b'"save_payment_method":true' in sent.body.replace(b" ", b"")
        intent = await shop.value(
            "select id::text from payments where save_method order by created_at desc limit 1"
        )
        payment = yookassa.payment_for(intent)
        yookassa.pay(payment["id"], last4="4242")
        await shop.billing.webhook("yookassa", *yookassa.notification(payment["id"]))
        await eventually(
            shop,
            "select title from saved_payment_methods where revoked_at is null",
            "Bank card *4242",
        )

        opened = user.send_command("settings")
        screen = await user.wait_for_message(after=opened)
        assert "Saved card: Bank card *4242" in screen.content
        assert "Auto-renew: on" in screen.content
        user.press(screen, text="Remove saved card")
        await shown(emulator, user, "will not be charged again", seconds=WAIT)
        await eventually(
            shop, "select count(*) from saved_payment_methods where revoked_at is null", 0
        )
        again = user.send_command("settings")
        screen = await user.wait_for_message(after=again)
        assert "Saved card" not in screen.content
        assert not any("Remove saved card" in b.text for row in screen.buttons() for b in row)
        await emulator.wait_drained()
    assert shop.alerts.alerts == []
