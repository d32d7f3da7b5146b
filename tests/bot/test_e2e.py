"""End to end: the bot's actors under a supervisor, real aiogram against the Telegram
emulator, real PostgreSQL, the payment providers and the VPN panel against their fakes.

The same journey runs in polling and in webhook mode: a new user takes the trial, gets
their link and QR code, buys with Stars and by card (each payment delivered twice), and
every payment is credited once: the first upgrades the trial, the second extends it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from aiogram.types import LabeledPrice
from starlette.applications import Starlette

from runtime.bot import TelegramBot
from runtime.bridge import run_asyncio
from runtime.i18n import load_translator
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Database, users
from runtime.supervision import ActorSpec, ActorState, Backoff, Supervisor
from runtime.testing.telegram import (
    SECRET_HEADER,
    EmulatorError,
    Kind,
    Message,
    SimUser,
    TelegramEmulator,
)
from runtime.web import HttpEndpoint
from runtime.workers._render import template_params

from .conftest import ADMIN, TOKEN, WEBHOOK_SECRET, Alerts, Shop, build_shop, make_settings
from .test_handlers import RAW_KEY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bot_settings(mode: str) -> dict[str, Any]:
    if mode == "polling":
        return {"mode": "polling", "polling_timeout_seconds": 1, "support_contact": "@help"}
    return {
        "mode": "webhook",
        "webhook_url": f"http://127.0.0.1:{free_port()}/telegram/hook",
        "webhook_secret": WEBHOOK_SECRET,
        "support_contact": "@help",
    }


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=10.0, webhook_retry_delays=(0.1, 0.3))
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture(params=["polling", "webhook"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator, mode: str
) -> AsyncIterator[Shop]:
    settings = make_settings(emulator.url, bot=bot_settings(mode))
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@asynccontextmanager
async def running(
    shop: Shop, *, extra: Sequence[ActorSpec] = (), instance: str | None = None, **knobs: Any
) -> AsyncIterator[tuple[TelegramBot, Supervisor]]:
    """The bot's actors (and, in webhook mode, the HTTP endpoint) under a supervisor;
    ``instance`` runs them as another instance on the same database."""
    services = shop.services
    if instance is not None:
        services = Services(shop.settings, Metrics(), instance_id=instance)
        services.provide_alerts(shop.alerts)  # type: ignore[arg-type]
        services.provide_db(shop.db)
        services.provide_domain(shop.services.billing, shop.services.access)
    bot = TelegramBot(services, idle_seconds=0.1, broadcast_every=0.2, **knobs)
    specs = [*bot.actors(), *extra]
    if shop.settings.bot.mode == "webhook":
        port = urlsplit(shop.settings.bot.webhook_url).port
        app = Starlette(routes=bot.webhook_routes())
        http = HttpEndpoint(lambda: app, host="127.0.0.1", port=port or 0)
        specs = [ActorSpec("http", http.run), *specs]
    supervisor = Supervisor(specs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(60):
            await supervisor.ready.wait()
        try:
            yield bot, supervisor
        finally:
            supervisor.request_shutdown()
    assert all(s.state is ActorState.STOPPED for s in supervisor.statuses)


def newest(emulator: TelegramEmulator, user: SimUser, check: Callable[[Message], bool]) -> Any:
    def find() -> Message | None:
        for message in reversed(emulator.messages(user.id, from_bot=True)):
            if check(message):
                return message
        return None

    return find


def has_button(message: Message, label: str) -> bool:
    return any(label in button.text for row in message.buttons() for button in row)


async def shown(
    emulator: TelegramEmulator, user: SimUser, text: str, *, seconds: float = 5.0
) -> Message:
    """The newest bot message (edits included) whose text or caption contains ``text``."""
    found: Message = await emulator.wait_until(
        newest(emulator, user, lambda m: text in m.content),
        timeout=seconds,
        what=f"a bot message with {text!r}",
        chat_id=user.id,
    )
    return found


async def press(
    emulator: TelegramEmulator, user: SimUser, message: Message, button: str, then: str
) -> Message:
    """Press the button labelled ``button`` and wait for a screen showing ``then``."""
    pressed = user.press(message, text=button)
    await emulator.wait_for_answer(pressed)
    return await shown(emulator, user, then)


async def eventually(shop: Shop, sql: str, expected: Any, *args: Any) -> None:
    with trio.fail_after(60):
        while await shop.value(sql, *args) != expected:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def buy_a_month_with_stars(emulator: TelegramEmulator, shop: Shop, user: SimUser) -> None:
    """``/buy``, one month, Telegram Stars, paid: until the payment is finalized."""
    hello = user.send_command("buy")
    plans = await user.wait_for_message(after=hello)
    plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
    user.press(plan, text="Telegram Stars")
    invoice = await user.wait_for_message(lambda m: m.invoice is not None)
    assert (await user.pay(invoice)).ok
    await eventually(shop, "select status from payments", "finalized")


def assert_transcript_translated(emulator: TelegramEmulator, user: SimUser) -> None:
    for entry in emulator.transcript(user.id):
        if entry.actor != "bot":
            continue
        shown_texts = [entry.text or ""] + [b.text for row in entry.buttons for b in row]
        for text in shown_texts:
            assert not RAW_KEY.search(text), (text, emulator.format_transcript(user.id))


async def journey(emulator: TelegramEmulator, shop: Shop, user: SimUser) -> None:
    tr = load_translator()
    hello = user.send_command("start")
    menu = await user.wait_for_message(after=hello)
    assert menu.content.startswith("Hi, Ann!")
    # the trial, then the activation the worker does
    screen = await press(emulator, user, menu, tr.t("en", "menu.trial"), "free trial has started")
    assert await shop.access.activate_batch("test-worker") == 1
    url = await shop.value("select access_url from subscriptions where user_id = $1", user.id)
    assert url
    screen = await press(emulator, user, screen, "Menu", "What would you like to do")
    screen = await press(emulator, user, screen, "My subscription", url)
    assert "Free trial" in screen.content
    await press(emulator, user, screen, "QR code", "Scan this QR code")
    photo = emulator.last_message(user.id)
    assert photo is not None and photo.photo is not None and photo.photo[:8] == b"\x89PNG\r\n\x1a\n"

    # Stars, the same update delivered twice
    menu = await press(emulator, user, screen, "Menu", "What would you like to do")
    plans = await press(emulator, user, menu, "Buy VPN", "Choose a plan")
    plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
    user.press(plan, text="Telegram Stars")
    invoice = await user.wait_for_message(lambda m: m.invoice is not None)
    paid = await user.pay(invoice, duplicate="same_update")
    assert paid.ok, paid
    asked, answered = (
        emulator.transcript(user.id, kinds=[kind])[-1].at
        for kind in (Kind.PRE_CHECKOUT, Kind.PRE_CHECKOUT_ANSWER)
    )
    assert answered - asked < 2.0  # Telegram allows 10 s
    await eventually(shop, "select count(*) from payments where status = 'finalized'", 1)
    first = await shop.value("select expires_at from subscriptions where kind = 'paid'")

    # card, the payment delivered again in a second message: a renewal
    user.press(plan, text="Bank card")
    invoice = await user.wait_for_message(
        lambda m: m.invoice is not None and m.invoice.currency == "RUB"
    )
    paid = await user.pay(invoice, duplicate="new_update")
    assert paid.ok, paid
    await eventually(shop, "select count(*) from payments where status = 'finalized'", 2)

    # CryptoBot: a link to pay outside Telegram, confirmed by Crypto Pay's webhook
    user.press(plan, text="CryptoBot")
    link = await emulator.wait_until(
        newest(emulator, user, lambda m: any(b.url for row in m.buttons() for b in row)),
        what="a payment link",
    )
    intent = await shop.value("select id::text from payments where provider = 'cryptobot'")
    invoice_id = shop.crypto.invoice_for(intent)["invoice_id"]
    assert link.button("Pay").url == shop.crypto.invoice_for(intent)["bot_invoice_url"]
    shop.crypto.pay(invoice_id)
    for _ in range(2):  # Crypto Pay delivers again when it is not sure
        headers, body = shop.crypto.webhook_delivery(invoice_id)
        await shop.billing.webhook("cryptobot", headers, body)
    await emulator.wait_drained()
    await eventually(shop, "select count(*) from telegram_updates where processed_at is null", 0)
    rows = await shop.fetch("select provider, status from payments order by created_at")
    assert rows == [
        {"provider": "stars", "status": "finalized"},
        {"provider": "card", "status": "finalized"},
        {"provider": "cryptobot", "status": "finalized"},
    ]
    paid_subs = await shop.fetch("select expires_at from subscriptions where kind = 'paid'")
    assert len(paid_subs) == 1
    assert paid_subs[0]["expires_at"] - first == timedelta(days=60)  # from the current expiry
    # the worker updates the account; my subscription shows the link
    await shop.access.activate_batch("test-worker")
    url = await shop.value(
        "select access_url from subscriptions where kind = 'paid' and user_id = $1", user.id
    )
    assert url
    user.send_command("subscription")
    screen = await shown(emulator, user, url)
    # bought during the trial: the trial became the paid subscription, with the same link
    assert "1 month" in screen.content and "Free trial" not in screen.content
    assert await shop.value("select count(*) from subscriptions") == 1
    assert shop.alerts.alerts == []
    assert_transcript_translated(emulator, user)


async def test_the_journey(emulator: TelegramEmulator, shop: Shop, mode: str) -> None:
    user = emulator.create_user(first_name="Ann", language_code="en", username="ann")
    async with running(shop):
        await journey(emulator, shop, user)
    if mode == "webhook":
        assert emulator.webhook_info()["url"] == shop.settings.bot.webhook_url
        assert emulator.calls_of("getUpdates") == []
    else:
        assert emulator.webhook_info()["url"] == ""
        assert emulator.counters["conflicts"] == 0


@pytest.mark.parametrize("mode", ["polling"])
async def test_russian_and_english_transcripts_are_translated(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    tr = load_translator()
    async with running(shop):
        for lang, name in (("ru", "Vera"), ("en", "Bob")):
            user = emulator.create_user(first_name=name, language_code=lang)
            hello = user.send_command("start")
            menu = await user.wait_for_message(after=hello)
            for button in ("menu.plans", "menu.subscription", "menu.settings", "menu.help"):
                home = tr.t(lang, "menu.home")
                user.press(menu, text=tr.t(lang, button))
                back = await emulator.wait_until(
                    newest(emulator, user, lambda m, home=home: has_button(m, home)),
                    what="a screen with a way home",
                )
                assert back.message_id == menu.message_id  # the menu message, edited
                user.press(back, text=home)
                menu = await shown(emulator, user, tr.t(lang, "menu.title", name=name)[:20])
            user.send_text("hello?")
            await shown(emulator, user, tr.t(lang, "errors.text_pointer"))
            user.send_command("stats")  # an admin command, from a user
            await shown(emulator, user, tr.t(lang, "errors.unknown_command"))
            assert_transcript_translated(emulator, user)
            entries = emulator.transcript(user.id, kinds=[Kind.BOT_MESSAGE, Kind.EDIT])
            assert entries and all(e.text for e in entries)
            if lang == "ru":
                assert all(not re.search(r"\b(the|and|your)\b", e.text or "") for e in entries)


@pytest.mark.parametrize("mode", ["webhook"])
async def test_a_forged_webhook_call_is_refused(emulator: TelegramEmulator, shop: Shop) -> None:
    url = shop.settings.bot.webhook_url
    assert url is not None
    forged = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "text": "/start",
            "chat": {"id": 1, "type": "private"},
        },
    }
    async with running(shop), httpx.AsyncClient() as client:
        refused = await client.post(url, json=forged, headers={SECRET_HEADER: "forged"})
        missing = await client.post(url, json=forged)
    assert (refused.status_code, missing.status_code) == (401, 401)
    assert await shop.value("select count(*) from telegram_updates") == 0


@pytest.mark.parametrize("mode", ["polling"])
async def test_one_poller_at_a_time_and_a_takeover(emulator: TelegramEmulator, shop: Shop) -> None:
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop, lease_ttl=1.0) as (first, _):
        async with running(shop, lease_ttl=1.0, instance="other") as (second, _):
            for _ in range(3):
                hello = user.send_command("start")
                await user.wait_for_message(after=hello)
            assert emulator.counters["conflicts"] == 0
            polled = {first.poller.stored > 0, second.poller.stored > 0}
            assert polled == {True, False}  # one of them polls
        # the second stopped: if it was the poller, the first takes over
        hello = user.send_command("start")
        await user.wait_for_message(after=hello, timeout=30)
    assert emulator.counters["conflicts"] == 0
    assert await shop.value("select count(*) from telegram_updates") == 4


@pytest.mark.parametrize("mode", ["polling"])
async def test_stopping_leaves_nothing_polling(emulator: TelegramEmulator, shop: Shop) -> None:
    user = emulator.create_user(first_name="Ann")
    async with running(shop):
        hello = user.send_command("start")
        await user.wait_for_message(after=hello)
    await trio.sleep(1.2)  # a long poll (1 s) cut short by the stop would have ended
    calls = len(emulator.calls_of("getUpdates"))
    await trio.sleep(1.2)
    assert len(emulator.calls_of("getUpdates")) == calls


@pytest.mark.parametrize("mode", ["polling"])
async def test_an_admin_sees_statistics_in_the_chat(emulator: TelegramEmulator, shop: Shop) -> None:
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    async with running(shop):
        hello = admin.send_command("stats")
        stats = await admin.wait_for_message(after=hello)
        assert stats.content.startswith("Statistics (UTC)")
        refreshed = await press(emulator, admin, stats, "Refresh", "Statistics (UTC)")
        assert refreshed.message_id == stats.message_id
    assert_transcript_translated(emulator, admin)


@pytest.mark.parametrize("mode", ["polling"])
async def test_an_admin_broadcast_goes_out_through_the_notifier(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    from runtime.workers import notifier

    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    people = [emulator.create_user(first_name=f"U{i}", language_code="ru") for i in range(12)]
    for person in people:
        await users.touch_user(shop.db, person.id, username=None, language="ru")
    async with running(shop, extra=[notifier.spec(shop.services)]):
        people[0].block()  # the bot hears of it (my_chat_member) and leaves them out
        blocked = "select blocked_bot_at is not null from users where telegram_id = $1"
        await eventually(shop, blocked, True, people[0].id)
        emulator.deactivate(people[1].id)  # the bot does not know: the send gets a 403
        hello = admin.send_command("broadcast", "all New servers in Finland!")
        preview = await admin.wait_for_message(  # after the broadcast's own preview
            lambda m: "recipients" in m.content, after=hello
        )
        assert "12 recipients" in preview.content  # eleven users and the admin
        await press(emulator, admin, preview, "Confirm", "sending 12 messages")
        final = await shown(emulator, admin, "finished", seconds=15)
        assert "delivered 11, blocked 1, failed 0 of 12" in final.content
    for person in people[2:]:
        got = [m.content for m in emulator.messages(person.id, from_bot=True)]
        assert got == ["New servers in Finland!"]
    for person in people[:2]:
        assert emulator.messages(person.id, from_bot=True) == []
    assert emulator.counters["answered.429"] == 0
    assert await shop.value("select status from broadcasts") == "finished"


@pytest.mark.parametrize("mode", ["polling"])
async def test_an_admin_refunds_a_payment(emulator: TelegramEmulator, shop: Shop) -> None:
    admin = emulator.create_user(ADMIN, first_name="Boss", language_code="en")
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop):
        await buy_a_month_with_stars(emulator, shop, user)
        payment_id = await shop.value("select id::text from payments")

        hello = admin.send_command("user", str(user.id))
        card = await admin.wait_for_message(after=hello)
        assert payment_id in card.content and "finalized" in card.content
        pressed = admin.press(card, text="Refund")
        await emulator.wait_for_answer(pressed)
        confirm = await shown(emulator, admin, f"Refund payment {payment_id}?")
        await press(emulator, admin, confirm, "Confirm", "was refunded")
        await eventually(shop, "select status from payments", "refunded")
        await emulator.wait_drained()  # the refunded_payment message, taken quietly
    (charge,) = emulator.payments()
    assert charge.refunded
    assert await shop.value("select status from subscriptions") == "revoked"
    assert [m.content for m in emulator.messages(user.id, from_bot=True)][-1] != (
        load_translator().t("en", "errors.text_pointer")
    )


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_refund_telegram_makes_takes_back_access(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    """Telegram gives the Stars back without the bot asking (its support, a dispute): the
    bot records the refund from the ``refunded_payment`` it receives and revokes access."""
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop):
        await buy_a_month_with_stars(emulator, shop, user)
        (charge,) = emulator.payments()
        emulator.refund_payment(charge.telegram_payment_charge_id)
        await eventually(shop, "select status from payments", "refunded")
        await eventually(shop, "select status from subscriptions", "revoked")
        told = "select count(*) from outbox where dedup_key like 'notify:refund:%'"
        await eventually(shop, told, 1)
    assert emulator.payments()[0].refunded


@pytest.mark.parametrize("mode", ["polling"])
async def test_telegram_failures_are_ridden_out(emulator: TelegramEmulator, shop: Shop) -> None:
    tr = load_translator()
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop) as (bot, supervisor):
        bot.poller.backoff = Backoff(min=0.05, max=0.1)
        # Telegram's flood control on the reply: the update is tried again after
        # retry_after, and the user gets one menu and no apology
        emulator.rate_limit_next(1, method="sendMessage")
        hello = user.send_command("start")
        menu = await user.wait_for_message(after=hello)
        assert menu.content.startswith("Hi, Ann!")
        # getUpdates failing for a while: the poller backs off and carries on
        emulator.fail_next(502, method="getUpdates", times=3)
        await emulator.wait_until(
            lambda: emulator.counters["faults"] >= 4, what="the faults to be used"
        )
        hello = user.send_command("help")
        await user.wait_for_message(after=hello)
        status = {s.name: s for s in supervisor.statuses}["bot-poller"]
        assert status.state is ActorState.RUNNING and status.degraded_reason is None
    bot_texts = [m.content for m in emulator.messages(user.id, from_bot=True)]
    assert tr.t("en", "errors.apology") not in bot_texts
    assert sum(text.startswith("Hi, Ann!") for text in bot_texts) == 1


@pytest.mark.parametrize("mode", ["polling"])
async def test_a_forwarded_invoice_cannot_be_paid_by_someone_else(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    """Our invoices carry a start_parameter: Bob, sent a copy of Ann's invoice, gets a link
    to the bot that shows him the plans, not a Pay button. An invoice without one (sent
    before invoices had it) that Bob pays anyway credits nobody: the charge is recorded
    against Bob, to refund to him, and he is told so."""
    tr = load_translator()
    ann = emulator.create_user(first_name="Ann", language_code="en")
    bob = emulator.create_user(first_name="Bob", language_code="en")
    async with running(shop), emulator.bot_client() as client:
        hello = ann.send_command("buy")
        plans = await ann.wait_for_message(after=hello)
        plan = await press(emulator, ann, plans, "1 month", "Choose how to pay")
        ann.press(plan, text="Telegram Stars")
        invoice = await ann.wait_for_message(lambda m: m.invoice is not None)
        assert invoice.invoice is not None and invoice.invoice.start_parameter == "plans"

        copy = ann.forward(invoice, to=bob)
        with pytest.raises(EmulatorError, match="no Pay button"):
            await bob.pay(forwarded=copy)
        opened = bob.open_link(copy.button().url or "")
        shown_to_bob = await bob.wait_for_message(after=opened)
        assert shown_to_bob.content == tr.t("en", "plans.title")
        assert has_button(shown_to_bob, "1 month")

        # an invoice sent without a start_parameter: its copy has a Pay button
        intent = await shop.value("select id::text from payments where provider = 'stars'")
        legacy = await run_asyncio(
            client.send_invoice,
            ann.id,
            title="1 month",
            description="1 month",
            payload=intent,
            currency="XTR",
            prices=[LabeledPrice(label="1 month", amount=150)],
        )
        loose = ann.forward(legacy.message_id, to=bob)
        paid = await bob.pay(forwarded=loose)
        assert paid.ok, paid
        told = await shown(emulator, bob, tr.t("en", "payment.foreign_payer")[:40])
        assert told.chat_id == bob.id
        await emulator.wait_drained()
        await eventually(
            shop, "select count(*) from telegram_updates where processed_at is null", 0
        )
    rows = await shop.fetch("select user_id, status, refused from payments order by created_at")
    assert rows == [
        {"user_id": ann.id, "status": "invoiced", "refused": None},
        {"user_id": bob.id, "status": "paid", "refused": "foreign_payer"},
    ]
    assert await shop.fetch("select * from subscriptions") == []
    assert shop.alerts.alert_keys() == [f"payment_foreign_payer:stars:{intent}"]
    assert not any(m.content == tr.t("en", "payment.foreign_payer") for m in ann.messages())


def expiry_text(moment: datetime) -> str:
    """An expiry as the messages show it."""
    return str(template_params({"expires_at": moment.isoformat()}, "en")["expires"])


@pytest.mark.parametrize("mode", ["polling"])
async def test_every_payment_ends_in_a_message_and_the_balance_pays_once(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    """A trial, then a purchase with Stars that upgrades it (one account, one link) and is
    followed by "access extended until ..."; then a double click on "Pay from balance":
    charged once, and followed by a message with the new expiry too."""
    from runtime.workers import notifier

    tr = load_translator()
    user = emulator.create_user(first_name="Ann", language_code="en")
    async with running(shop, extra=[notifier.spec(shop.services)]):
        hello = user.send_command("start")
        menu = await user.wait_for_message(after=hello)
        await press(emulator, user, menu, tr.t("en", "menu.trial"), "free trial has started")
        assert await shop.access.activate_batch("test-worker") == 1
        url = await shop.value("select access_url from subscriptions where user_id = $1", user.id)
        await shown(emulator, user, "access is ready", seconds=30)

        hello = user.send_command("buy")
        plans = await user.wait_for_message(after=hello)
        plan = await press(emulator, user, plans, "1 month", "Choose how to pay")
        assert not has_button(plan, "Pay from balance")  # the balance is empty
        user.press(plan, text="Telegram Stars")
        invoice = await user.wait_for_message(lambda m: m.invoice is not None)
        assert (await user.pay(invoice)).ok
        await eventually(shop, "select count(*) from payments where status = 'finalized'", 1)
        [upgraded] = await shop.fetch("select kind, expires_at, access_url from subscriptions")
        assert upgraded["kind"] == "paid"
        assert await shop.access.activate_batch("test-worker") == 1
        expires = expiry_text(upgraded["expires_at"])
        extended = await shown(emulator, user, f"extended until {expires}", seconds=30)
        # Marzban's link carries the second it was issued (every one keeps working)
        link = await shop.value("select access_url from subscriptions")
        assert link in extended.content and link.split("/sub/")[0] == url.split("/sub/")[0]

        await shop.value(
            "update users set balance_minor = 50000 where telegram_id = $1 returning 1", user.id
        )
        hello = user.send_command("buy")
        plans = await user.wait_for_message(after=hello)
        user.press(plans, text="1 month")
        plan = await emulator.wait_until(  # this screen, not the first purchase's
            newest(emulator, user, lambda m: has_button(m, "Pay from balance (₽199.00")),
            what="the plan with a button to pay from the balance",
        )
        assert plan.message_id == plans.message_id
        clicks = [user.press(plan, text="Pay from balance") for _ in range(2)]
        for click in clicks:
            await emulator.wait_for_answer(click)
        paid = await shown(emulator, user, "from your balance")
        assert "Balance left: ₽301.00" in paid.content
        await emulator.wait_drained()
        await eventually(
            shop, "select count(*) from telegram_updates where processed_at is null", 0
        )
        assert await shop.value("select count(*) from payments where provider = 'balance'") == 1
        assert await shop.value(
            "select balance_minor from users where telegram_id = $1", user.id
        ) == (50000 - 19900)
        renewed = await shop.value("select expires_at from subscriptions")
        assert renewed - upgraded["expires_at"] == timedelta(days=30)
        assert await shop.access.activate_batch("test-worker") == 1
        await shown(emulator, user, f"extended until {expiry_text(renewed)}", seconds=30)
    assert await shop.value("select count(*) from subscriptions") == 1
    assert shop.alerts.alerts == []
    assert_transcript_translated(emulator, user)
