"""Invoices, the pre-checkout rule, successful payments, refunds and Star transactions."""

from __future__ import annotations

import asyncio

import pytest
from aiogram import Dispatcher, F
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LabeledPrice, PreCheckoutQuery
from aiogram.types import Message as AiogramMessage

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.telegram import EmulatorError, Kind, Limits, TelegramEmulator, polling

STARS = {"currency": "XTR", "prices": [LabeledPrice(label="30 days", amount=150)]}


def shop(answer: str = "ok", delay: float = 0.0) -> tuple[Dispatcher, list[dict[str, object]]]:
    """A bot that answers pre-checkout queries and thanks for payments."""
    dispatcher = Dispatcher()
    paid: list[dict[str, object]] = []

    @dispatcher.pre_checkout_query()
    async def pre_checkout(query: PreCheckoutQuery) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            if answer == "ok":
                await query.answer(ok=True)
            else:
                await query.answer(ok=False, error_message=answer)
        except TelegramBadRequest as error:
            paid.append({"late_answer": str(error)})

    @dispatcher.message(F.successful_payment)
    async def thanks(message: AiogramMessage, event_update: object) -> None:
        assert message.successful_payment is not None
        paid.append(
            {
                "update_id": getattr(event_update, "update_id", None),
                **message.successful_payment.model_dump(exclude_none=True),
            }
        )
        await message.answer("Thank you!")

    return dispatcher, paid


async def test_stars_invoice_paid_then_refunded() -> None:
    emulator = TelegramEmulator()
    dispatcher, paid = shop()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user(first_name="Ann")
        other = emulator.create_user(first_name="Bob")
        async with polling(dispatcher, bot):
            sent = await run_asyncio(
                bot.send_invoice,
                user.id,
                title="VPN, 30 days",
                description="One month of VPN access",
                payload="intent-42",
                provider_token="",
                **STARS,
            )
            assert sent.invoice is not None and sent.invoice.total_amount == 150
            result = await user.pay(sent.message_id)
            assert result.ok, result
            assert result.payment is not None
            thanks = await user.wait_for_message(lambda m: m.text == "Thank you!", timeout=30)
            assert thanks.message_id > result.payment.message_id
        charge = result.payment.telegram_payment_charge_id
        assert paid == [
            {
                "update_id": result.payment.update_id,
                "currency": "XTR",
                "total_amount": 150,
                "invoice_payload": "intent-42",
                "telegram_payment_charge_id": charge,
                "provider_payment_charge_id": "",
            }
        ]

        transactions = await run_asyncio(bot.get_star_transactions)
        assert [(t.id, t.amount) for t in transactions.transactions] == [(charge, 150)]

        with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
            await run_asyncio(
                bot.refund_star_payment, user_id=other.id, telegram_payment_charge_id=charge
            )
        assert await run_asyncio(
            bot.refund_star_payment, user_id=user.id, telegram_payment_charge_id=charge
        )
        with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
            await run_asyncio(
                bot.refund_star_payment, user_id=user.id, telegram_payment_charge_id=charge
            )
        assert emulator.payment(charge).refunded
        transactions = await run_asyncio(bot.get_star_transactions, offset=1, limit=5)
        assert [t.receiver is not None for t in transactions.transactions] == [True]

        updates = await run_asyncio(bot.get_updates)
        refunded = [u.message.refunded_payment for u in updates if u.message]
        assert refunded and refunded[-1] is not None
        assert refunded[-1].telegram_payment_charge_id == charge

    kinds = [e.kind for e in user.transcript()]
    assert kinds == [
        Kind.INVOICE,
        Kind.PRE_CHECKOUT,
        Kind.PRE_CHECKOUT_ANSWER,
        Kind.PAYMENT,
        Kind.BOT_MESSAGE,
        Kind.REFUND,
    ]
    assert not emulator.internal_errors


async def test_late_pre_checkout_answer_cancels_the_payment() -> None:
    emulator = TelegramEmulator(pre_checkout_timeout=0.3)
    dispatcher, paid = shop(delay=0.6)
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        async with polling(dispatcher, bot):
            await run_asyncio(
                bot.send_invoice,
                user.id,
                title="VPN",
                description="VPN",
                payload="late",
                **STARS,
            )
            result = await user.pay()
            assert result.status == "expired"
            late = await emulator.wait_for_entry(
                user.id, Kind.PRE_CHECKOUT_ANSWER, lambda e: e.data["late"], timeout=5
            )
            assert late.data["ok"] is True
            # the emulator notes the answer before it replies: wait for the bot to hear
            # the refusal before polling stops and closes its session
            await emulator.wait_until(lambda: paid, timeout=5, what="the refusal heard")
    assert paid and "query is too old" in str(paid[0]["late_answer"])
    assert emulator.payments() == []
    assert [e.data["reason"] for e in user.transcript(kinds=[Kind.PAYMENT_CANCELLED])] == [
        "timeout"
    ]
    assert emulator.counters["payments.expired"] == 1


async def test_declined_pre_checkout_cancels_the_payment() -> None:
    emulator = TelegramEmulator(pre_checkout_timeout=2)
    dispatcher, paid = shop(answer="Sold out")
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        async with polling(dispatcher, bot):
            await run_asyncio(
                bot.send_invoice,
                user.id,
                title="VPN",
                description="VPN",
                payload="declined",
                **STARS,
            )
            result = await user.pay()
    assert result.status == "declined"
    assert result.error_message == "Sold out"
    assert paid == []
    assert not any(m.successful_payment for m in user.messages())


async def test_duplicate_delivery_of_a_payment() -> None:
    emulator = TelegramEmulator(limits=Limits.off())
    dispatcher, paid = shop()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        async with polling(dispatcher, bot):
            await run_asyncio(
                bot.send_invoice, user.id, title="A", description="A", payload="p1", **STARS
            )
            first = await user.pay(duplicate="same_update")
            await emulator.wait_until(lambda: len(paid) == 2, timeout=30)
            await run_asyncio(
                bot.send_invoice, user.id, title="B", description="B", payload="p2", **STARS
            )
            second = await user.pay(duplicate="new_update")
            await emulator.wait_until(lambda: len(paid) == 4, timeout=30)
    assert first.payment and second.payment
    same, again = paid[0], paid[1]
    assert same == again  # the very same update, update_id included
    assert paid[2]["update_id"] != paid[3]["update_id"]
    assert paid[2]["telegram_payment_charge_id"] == paid[3]["telegram_payment_charge_id"]
    assert len(emulator.payments()) == 2


async def test_invoice_rules_card_payments_and_links() -> None:
    emulator = TelegramEmulator(pre_checkout_timeout=2, limits=Limits.off())
    dispatcher, paid = shop()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        user = emulator.create_user()
        two_prices = [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=2)]
        with pytest.raises(TelegramBadRequest, match="STARS_INVOICE_INVALID"):
            await run_asyncio(
                bot.send_invoice,
                user.id,
                title="t",
                description="d",
                payload="p",
                currency="XTR",
                prices=two_prices,
            )
        with pytest.raises(TelegramBadRequest, match="PAYMENT_PROVIDER_INVALID"):
            await run_asyncio(
                bot.send_invoice,
                user.id,
                title="t",
                description="d",
                payload="p",
                currency="RUB",
                prices=two_prices,
            )
        async with polling(dispatcher, bot):
            await run_asyncio(
                bot.send_invoice,
                user.id,
                title="Card",
                description="d",
                payload="card-1",
                currency="RUB",
                prices=[LabeledPrice(label="30 days", amount=29900)],
                provider_token="381764678:TEST:123",
            )
            card = await user.pay()
            link = await run_asyncio(
                bot.create_invoice_link,
                title="Link",
                description="d",
                payload="link-1",
                currency="XTR",
                prices=[LabeledPrice(label="x", amount=5)],
            )
            via_link = await user.pay(link=link)
            await emulator.wait_until(lambda: len(paid) == 2, timeout=30)
    assert card.payment is not None and card.payment.provider_payment_charge_id
    assert card.payment.currency == "RUB" and card.payment.total_amount == 29900
    assert via_link.payment is not None and via_link.payment.invoice_payload == "link-1"
    # only the Stars payment is a Star transaction
    assert [t["id"] for t in emulator.star_transactions()] == [
        via_link.payment.telegram_payment_charge_id
    ]


async def test_a_forwarded_invoice_is_payable_by_its_holder_only_without_a_start_parameter() -> (
    None
):
    """sendInvoice's ``start_parameter``: empty, a forwarded copy has a Pay button and
    whoever holds it pays the same invoice; set, the copy only links to the bot."""
    emulator = TelegramEmulator(bot_username="vpn_shop_bot")
    dispatcher, paid = shop()
    async with emulator.running(), asyncio_loop(), emulator.bot_client() as bot:
        ann = emulator.create_user(first_name="Ann")
        bob = emulator.create_user(first_name="Bob")
        async with polling(dispatcher, bot):
            common = {"title": "VPN", "description": "30 days", "provider_token": "", **STARS}
            linked = await run_asyncio(
                bot.send_invoice, ann.id, payload="intent-1", start_parameter="plans", **common
            )
            open_ = await run_asyncio(bot.send_invoice, ann.id, payload="intent-2", **common)
            with pytest.raises(TelegramBadRequest, match="START_PARAM_INVALID"):
                await run_asyncio(
                    bot.send_invoice, ann.id, payload="i", start_parameter="no spaces", **common
                )

            copy = ann.forward(linked.message_id, to=bob)
            button = copy.button()
            assert (button.pay, button.url) == (False, "https://t.me/vpn_shop_bot?start=plans")
            with pytest.raises(EmulatorError, match="no Pay button"):
                await bob.pay(forwarded=copy)
            hello = bob.open_link(button.url)
            assert hello.text == "/start plans"
            assert hello.chat_id == bob.id

            loose = ann.forward(open_.message_id, to=bob)
            assert loose.button().pay
            with pytest.raises(EmulatorError, match="does not have"):
                await ann.pay(forwarded=loose)
            result = await bob.pay(forwarded=loose)
            assert result.ok and result.payment is not None
            assert (result.payment.user_id, result.payment.chat_id) == (bob.id, bob.id)
            await bob.wait_for_message(lambda m: m.text == "Thank you!", timeout=30)
        assert [p["invoice_payload"] for p in paid] == ["intent-2"]
        assert emulator.counters["forwards"] == 2
        # the bot saw Bob's /start and Bob's payment, nothing of the forwarding itself
        assert [e.kind for e in emulator.transcript(ann.id)].count(Kind.PAYMENT) == 0
