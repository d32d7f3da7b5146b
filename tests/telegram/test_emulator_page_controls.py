"""The control routes behind the sandbox page's own actions: an invoice that expires, a
refund Telegram makes, the blocked list, and refusals a browser on another origin can read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from aiogram import Bot
from aiogram.types import LabeledPrice, Update

from runtime.bridge import asyncio_loop, run_asyncio
from runtime.testing.telegram import EmulatorError, Kind, TelegramEmulator


async def _invoice(bot: Bot, chat_id: int, currency: str, amount: int) -> int:
    sent = await run_asyncio(
        bot.send_invoice,
        chat_id,
        title="VPN",
        description="VPN",
        payload=f"{currency}-{amount}",
        currency=currency,
        prices=[LabeledPrice(label="x", amount=amount)],
        provider_token="" if currency == "XTR" else "284685063:TEST:abc",
    )
    return sent.message_id


async def _answer_pre_checkouts(bot: Bot) -> AsyncIterator[Update]:
    offset = 0
    while True:
        for update in await run_asyncio(bot.get_updates, offset=offset, timeout=1):
            offset = update.update_id + 1
            if update.pre_checkout_query is not None:
                await run_asyncio(
                    bot.answer_pre_checkout_query, update.pre_checkout_query.id, ok=True
                )
            yield update


@asynccontextmanager
async def _controlled() -> AsyncIterator[tuple[TelegramEmulator, httpx.AsyncClient, Bot]]:
    """A running emulator, a client of its control API, and a bot on it (asyncio loop open)."""
    emulator = TelegramEmulator(pre_checkout_timeout=3)
    async with (
        emulator.running() as url,
        httpx.AsyncClient(base_url=f"{url}/_control") as control,
        asyncio_loop(),
        emulator.bot_client() as bot,
    ):
        yield emulator, control, bot


async def test_an_expired_invoice_refuses_payment_over_http() -> None:
    async with _controlled() as (emulator, control, bot):
        user = emulator.create_user(4242, "Web")
        friend = emulator.create_user(4343, "Friend")
        message_id = await _invoice(bot, user.id, "RUB", 19900)
        copy = user.forward(message_id, to=friend)
        [listed] = [m for m in (await control.get("/chats/4242/messages")).json()]
        assert listed["invoice_status"] == "open"

        expired = await control.post(f"/invoices/{message_id}/expire", json={"chat_id": 4242})
        assert expired.status_code == 200, expired.text
        [listed] = (await control.get("/chats/4242/messages")).json()
        assert listed["invoice_status"] == "expired"
        assert emulator.transcript(4242)[-1].kind == Kind.INVOICE_EXPIRED

        paid = await control.post("/users/4242/payments", json={"message_id": message_id})
        assert paid.status_code == 400
        assert paid.json()["error"].startswith("INVOICE_EXPIRED")
        assert paid.headers["access-control-allow-origin"] == "*"
        # the latest unpaid invoice skips it; the bot was asked nothing
        latest = await control.post("/users/4242/payments", json={})
        assert "no unpaid invoice" in latest.json()["error"]
        with pytest.raises(EmulatorError, match="INVOICE_EXPIRED"):
            await friend.pay(forwarded=copy)
        assert not [u for u in await run_asyncio(bot.get_updates) if u.pre_checkout_query]

        wrong_chat = await control.post(f"/invoices/{message_id}/expire", json={"chat_id": 1})
        assert wrong_chat.status_code == 400 and "not an invoice" in wrong_chat.json()["error"]


async def test_a_paid_invoice_cannot_expire() -> None:
    async with _controlled() as (emulator, control, bot):
        user = emulator.create_user(4242, "Web")
        message_id = await _invoice(bot, user.id, "XTR", 150)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                async for _ in _answer_pre_checkouts(bot):
                    pass

            nursery.start_soon(answer)
            assert (await user.pay(message_id)).ok
            nursery.cancel_scope.cancel()
        [listed] = [
            m for m in (await control.get("/chats/4242/messages")).json() if m.get("invoice")
        ]
        assert listed["invoice_status"] == "paid"
        refused = await control.post(f"/invoices/{message_id}/expire", json={"chat_id": 4242})
        assert refused.status_code == 400 and "paid already" in refused.json()["error"]


async def test_telegram_refunds_a_stars_payment_as_refund_star_payment_does() -> None:
    async with _controlled() as (emulator, control, bot):
        user = emulator.create_user(4242, "Web")
        stars = await _invoice(bot, user.id, "XTR", 150)
        card = await _invoice(bot, user.id, "RUB", 19900)
        refunds: list[Update] = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for update in _answer_pre_checkouts(bot):
                    if update.message is not None and update.message.refunded_payment:
                        refunds.append(update)

            nursery.start_soon(watch)
            stars_charge = (await user.pay(stars)).payment
            card_charge = (await user.pay(card)).payment
            assert stars_charge is not None and card_charge is not None

            refunded = await control.post(
                f"/payments/{stars_charge.telegram_payment_charge_id}/refund"
            )
            assert refunded.status_code == 200, refunded.text
            assert refunded.json()["refunded"] is True
            await emulator.wait_until(lambda: refunds, timeout=30)
            nursery.cancel_scope.cancel()

        [update] = refunds
        assert update.message is not None and update.message.refunded_payment is not None
        assert update.message.refunded_payment.total_amount == 150
        assert update.message.from_user is not None and update.message.from_user.id == 4242
        again = await control.post(f"/payments/{stars_charge.telegram_payment_charge_id}/refund")
        assert again.status_code == 400 and "CHARGE_ALREADY_REFUNDED" in again.json()["error"]
        not_stars = await control.post(f"/payments/{card_charge.telegram_payment_charge_id}/refund")
        assert not_stars.status_code == 400 and "CHARGE_NOT_FOUND" in not_stars.json()["error"]
        assert emulator.counters["refunds"] == 1


async def test_the_state_lists_who_blocked_the_bot_and_unknown_routes_answer_json() -> None:
    emulator = TelegramEmulator()
    async with (
        emulator.running() as url,
        httpx.AsyncClient(base_url=f"{url}/_control") as control,
    ):
        emulator.create_user(4242, "Web")
        assert (await control.get("/state")).json()["bots"][0]["blocked"] == []
        await control.post("/users/4242/block")
        assert (await control.get("/state")).json()["bots"][0]["blocked"] == [4242]

        missing = await control.post("/no-such-route", json={})
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == "*"
        assert missing.json() == {"error": "POST /_control/no-such-route: Not Found"}
        wrong_method = await control.delete("/users")
        assert wrong_method.status_code == 405
        assert "Method Not Allowed" in wrong_method.json()["error"]
