"""The handlers behind the real dispatcher and inbox, with Bot API calls answered locally.

Every update goes the way production updates go: stored in the inbox, claimed, fed to the
aiogram dispatcher through the bridge, settled. Only HTTP to Telegram is replaced.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import SendMessage

from runtime.alerts import Severity
from runtime.bot import TelegramBot
from runtime.bot import keyboards as kb
from runtime.failures import DATABASE, InfraError
from runtime.i18n import load_translator
from runtime.storage import Database, inbox, job_kinds

from .conftest import ADMIN, TOKEN, Alerts, Shop, build_shop, make_settings
from .recording import Call, RecordingSession

USER = 501
RAW_KEY = re.compile(
    r"\b(menu|plans|trial|subscription|balance|settings|help|errors|admin|"
    r"checkout|payment|providers|language|commands)\.[a-z_]+\b"
)


class Driver:
    """A Telegram user (or several) talking to the bot through the inbox."""

    def __init__(self, shop: Shop, bot: TelegramBot, session: RecordingSession) -> None:
        self.shop = shop
        self.tb = bot
        self.session = session
        session.middleware(bot.link)
        self.bot = Bot(TOKEN, session=session)
        self._ids = itertools.count(1)

    def person(self, uid: int, lang: str = "en") -> dict[str, Any]:
        return {
            "id": uid,
            "is_bot": False,
            "first_name": f"User{uid}",
            "language_code": lang,
            "username": f"user{uid}",
        }

    async def deliver(self, *updates: dict[str, Any]) -> list[Call]:
        await inbox.store(self.shop.db, list(updates))
        claimed = await inbox.claim(
            self.shop.db, owner=self.tb.processor.owner, limit=100, claim_seconds=60
        )
        await self.tb.processor.process(claimed, self.tb.on_asyncio(self.bot))
        return self.session.take()

    def message(self, uid: int, lang: str = "en", **content: Any) -> dict[str, Any]:
        update_id = next(self._ids)
        return {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": int(time.time()),
                "chat": {"id": uid, "type": "private"},
                "from": self.person(uid, lang),
                **content,
            },
        }

    async def send(self, uid: int, text: str, lang: str = "en") -> list[Call]:
        return await self.deliver(self.message(uid, lang, text=text))

    async def press(
        self, uid: int, data: str | CallbackData, lang: str = "en", on_text: str = "menu"
    ) -> list[Call]:
        update_id = next(self._ids)
        packed = data if isinstance(data, str) else data.pack()
        return await self.deliver(
            {
                "update_id": update_id,
                "callback_query": {
                    "id": f"cq{update_id}",
                    "from": self.person(uid, lang),
                    "chat_instance": "ci",
                    "data": packed,
                    "message": {
                        "message_id": 77,
                        "date": int(time.time()),
                        "chat": {"id": uid, "type": "private"},
                        "text": on_text,
                    },
                },
            }
        )

    async def pre_checkout(self, uid: int, payload: str, currency: str, amount: int) -> list[Call]:
        update_id = next(self._ids)
        return await self.deliver(
            {
                "update_id": update_id,
                "pre_checkout_query": {
                    "id": f"pc{update_id}",
                    "from": self.person(uid),
                    "currency": currency,
                    "total_amount": amount,
                    "invoice_payload": payload,
                },
            }
        )

    def payment_update(
        self, uid: int, payload: str, currency: str, amount: int, charge: str
    ) -> dict[str, Any]:
        return self.message(
            uid,
            successful_payment={
                "currency": currency,
                "total_amount": amount,
                "invoice_payload": payload,
                "telegram_payment_charge_id": charge,
                "provider_payment_charge_id": f"p-{charge}",
            },
        )


@pytest.fixture
async def shop(db: Database, panel: Any, crypto: Any, alerts: Alerts) -> AsyncIterator[Shop]:
    shop = build_shop(make_settings("http://127.0.0.1:9"), db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@pytest.fixture
def driver(shop: Shop) -> Driver:
    table = {
        "state": "healthy",
        "ready": True,
        "actors": [{"name": "bot", "state": "running", "restarts": 0}],
    }
    return Driver(shop, TelegramBot(shop.services, actor_table=lambda: table), RecordingSession())


def texts(calls: list[Call]) -> list[str]:
    return [c.text for c in calls if c.text]


def buttons(calls: list[Call]) -> list[dict[str, Any]]:
    found = []
    for call in calls:
        markup = call.params.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            found.extend(row)
    return found


def labels(calls: list[Call]) -> list[str]:
    return [b["text"] for b in buttons(calls)]


def by_method(calls: list[Call], method: str) -> list[Call]:
    return [c for c in calls if c.method == method]


def assert_translated(calls: list[Call]) -> None:
    for line in texts(calls) + labels(calls):
        assert not RAW_KEY.search(line), line


# -- the menu and languages ------------------------------------------------------------


async def test_start_shows_the_menu_in_the_clients_language(driver: Driver) -> None:
    tr = load_translator()
    english = await driver.send(USER, "/start", lang="en")
    (sent,) = by_method(english, "sendMessage")
    assert sent.text.startswith("Hi, User501!")
    assert tr.t("en", "menu.trial") in labels(english)
    russian = await driver.send(USER + 1, "/start", lang="ru-RU")
    (sent,) = by_method(russian, "sendMessage")
    assert sent.text.startswith("Здравствуйте, User502!")
    assert tr.t("ru", "menu.plans") in labels(russian)
    assert_translated(english + russian)


async def test_every_screen_is_translated_in_both_languages(driver: Driver) -> None:
    """A walk through every user screen, in English and in Russian: no raw keys anywhere."""
    for uid, lang in ((601, "en"), (602, "ru")):
        calls = await driver.send(uid, "/start", lang=lang)
        for screen in ("plans", "sub", "topup", "settings", "help", "trial", "home"):
            calls += await driver.press(uid, kb.Nav(to=screen), lang=lang)
        calls += await driver.press(uid, kb.PlanCb(plan="month"), lang=lang)
        calls += await driver.press(uid, kb.TopUpCb(amount=10000), lang=lang)
        calls += await driver.press(uid, kb.AutoRenewCb(on=1), lang=lang)
        calls += await driver.send(uid, "hello there", lang=lang)
        calls += await driver.send(uid, "/nonsense", lang=lang)
        calls += await driver.press(uid, "nonsense:1", lang=lang)
        assert_translated(calls)
        shown = "\n".join(texts(calls))
        marker = "Choose a plan" if lang == "en" else "Выберите тариф"
        assert marker in shown


async def test_the_language_switch_sticks(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start", lang="en")
    calls = await driver.press(USER, kb.LangCb(code="ru"), lang="en")
    assert "Язык" in by_method(calls, "editMessageText")[0].text
    assert await shop.value("select language from users where telegram_id = $1", USER) == "ru"
    calls = await driver.send(USER, "/start", lang="en")  # the client still says English
    assert by_method(calls, "sendMessage")[0].text.startswith("Здравствуйте")


# -- recording contacts ------------------------------------------------------------------


def count_touches(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    touched: list[int] = []
    real = driver.tb.svc.touch

    async def touch(user_id: int, **kwargs: Any) -> Any:
        touched.append(user_id)
        return await real(user_id, **kwargs)

    monkeypatch.setattr(driver.tb.svc, "touch", touch)
    return touched


async def user_row(shop: Shop, uid: int) -> dict[str, Any]:
    (row,) = await shop.fetch(
        "select xmin::text as version, username, language, blocked_bot_at from users"
        " where telegram_id = $1",
        uid,
    )
    return row


async def test_a_known_user_who_changed_nothing_is_not_written_again(
    driver: Driver, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched = count_touches(driver, monkeypatch)
    await driver.send(USER, "/start")
    assert touched == [USER]  # first contact: created
    before = await user_row(shop, USER)
    again = await driver.send(USER, "/start")
    calls = await driver.press(USER, kb.Nav(to="help"))
    assert touched == [USER]  # the claim brought their record: nothing to write
    assert await user_row(shop, USER) == before  # the row was not rewritten
    (menu,) = by_method(again, "sendMessage")
    assert menu.text.startswith("Hi, User501!")
    assert by_method(calls, "answerCallbackQuery")


async def test_a_known_user_who_changed_is_written_again(
    driver: Driver, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched = count_touches(driver, monkeypatch)
    await driver.send(USER, "/start")
    renamed = driver.message(USER, text="/start")
    renamed["message"]["from"]["username"] = "renamed501"
    await driver.deliver(renamed)
    assert touched == [USER, USER]
    assert (await user_row(shop, USER))["username"] == "renamed501"
    # blocked the bot since (a send failed with 403), and writes again: unblocked
    await shop.services.db.transaction(_blocked)
    await driver.send(USER, "/help")
    assert touched == [USER, USER, USER]
    assert (await user_row(shop, USER))["blocked_bot_at"] is None


async def _blocked(conn: Any) -> None:
    await conn.execute("update users set blocked_bot_at = now() where telegram_id = $1", USER)


async def test_a_change_made_earlier_in_the_same_batch_is_seen(driver: Driver) -> None:
    """The record a claim read is stale once an update of the same chat ran after it."""
    await driver.send(USER, "/start", lang="en")
    press_id, start_id = 10_001, 10_002
    press = {
        "update_id": press_id,
        "callback_query": {
            "id": "cq-switch",
            "from": driver.person(USER, "en"),
            "chat_instance": "ci",
            "data": kb.LangCb(code="ru").pack(),
            "message": {
                "message_id": 77,
                "date": 1700000000,
                "chat": {"id": USER, "type": "private"},
                "text": "menu",
            },
        },
    }
    start = driver.message(USER, "en", text="/start")
    start["update_id"] = start_id
    calls = await driver.deliver(press, start)
    menus = [c for c in by_method(calls, "sendMessage") if c.text.startswith("Здравствуйте")]
    assert len(menus) == 1  # /start answered in the language chosen just before


async def test_plain_text_points_to_the_menu(driver: Driver) -> None:
    calls = await driver.send(USER, "how do I connect?")
    (sent,) = by_method(calls, "sendMessage")
    assert sent.text == load_translator().t("en", "errors.text_pointer")
    assert buttons(calls)[0]["callback_data"] == kb.Nav(to="home").pack()


# -- trial and subscription ------------------------------------------------------------


async def test_trial_then_activation_then_link_and_qr(driver: Driver, shop: Shop) -> None:
    calls = await driver.press(USER, kb.Nav(to="trial"))
    assert "free trial has started" in by_method(calls, "editMessageText")[0].text
    again = await driver.press(USER, kb.Nav(to="trial"))
    assert "already running" in by_method(again, "editMessageText")[0].text
    assert await shop.access.activate_batch("test") == 1
    calls = await driver.press(USER, kb.Nav(to="sub"))
    (screen,) = by_method(calls, "editMessageText")
    url = await shop.value("select access_url from subscriptions where user_id = $1", USER)
    assert url and url in screen.text and "Free trial" in screen.text
    assert "(1 day left)" in screen.text  # a 24 h trial that just started: not "0 days"
    (qr,) = [b for b in buttons(calls) if b["text"].startswith("📷")]
    calls = await driver.press(USER, qr["callback_data"])
    (photo,) = by_method(calls, "sendPhoto")
    assert photo.params["caption"].startswith("Scan this QR code")


# -- payments ----------------------------------------------------------------------------


async def test_stars_invoice_pre_checkout_and_payment_credit_once(
    driver: Driver, shop: Shop
) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    (invoice,) = by_method(calls, "sendInvoice")
    assert invoice.params["currency"] == "XTR" and invoice.params["prices"][0]["amount"] == 150
    payload = invoice.params["payload"]
    calls = await driver.pre_checkout(USER, payload, "XTR", 150)
    (answer,) = by_method(calls, "answerPreCheckoutQuery")
    assert answer.params["ok"] is True
    paid = driver.payment_update(USER, payload, "XTR", 150, "charge-1")
    await driver.deliver(paid)
    await driver.deliver(paid)  # the same update again: stored once
    await driver.deliver(driver.payment_update(USER, payload, "XTR", 150, "charge-1"))
    rows = await shop.fetch("select status, external_id from payments")
    assert rows == [{"status": "finalized", "external_id": "charge-1"}]
    subs = await shop.fetch("select kind, status from subscriptions")
    assert subs == [{"kind": "paid", "status": "active"}]
    notify = await shop.fetch("select dedup_key from outbox where kind = $1", job_kinds.NOTIFY)
    assert notify == [{"dedup_key": f"notify:payment:{payload}"}]
    # and the same invoice cannot be paid twice
    calls = await driver.pre_checkout(USER, payload, "XTR", 150)
    assert by_method(calls, "answerPreCheckoutQuery")[0].params["ok"] is False


async def test_invoices_link_forwarded_copies_back_to_the_bot(driver: Driver) -> None:
    """``start_parameter`` on every invoice: a forwarded copy opens the bot (the plans, or
    the balance) instead of offering a Pay button to whoever it was forwarded to."""
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    assert by_method(calls, "sendInvoice")[0].params["start_parameter"] == "plans"
    calls = await driver.press(USER, kb.TopUpCb(amount=10000, provider="card"))
    assert by_method(calls, "sendInvoice")[0].params["start_parameter"] == "topup"
    tr = load_translator()
    calls = await driver.send(USER + 7, "/start plans")
    assert texts(calls) == [tr.t("en", "plans.title")]
    calls = await driver.send(USER + 7, "/start topup")
    assert texts(calls)[0].startswith("Your balance:")
    calls = await driver.send(USER + 7, "/start something-else")
    assert texts(calls)[0].startswith("Hi, User")


async def test_a_payment_in_another_currency_is_refused_and_the_payer_told_why(
    driver: Driver, shop: Shop
) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]
    paid = driver.payment_update(USER, payload, "RUB", 150, "charge-rub")

    calls = await driver.deliver(paid)

    tr = load_translator()
    assert texts(calls) == [tr.t("en", "payment.mismatch")]
    assert tr.t("en", "errors.payment_delayed") not in texts(calls)
    assert shop.alerts.alert_keys() == [f"payment_mismatch:stars:{payload}"]
    assert await shop.fetch("select * from subscriptions") == []
    done = "select processed_at is not null from telegram_updates where update_id = $1"
    assert await shop.value(done, paid["update_id"])  # settled: not retried, not given up
    rows = await shop.fetch("select user_id, status, refused from payments order by created_at")
    assert rows == [
        {"user_id": USER, "status": "invoiced", "refused": None},
        {"user_id": USER, "status": "paid", "refused": "mismatch"},
    ]


async def test_a_payer_who_is_not_the_owner_is_refused_and_recorded_against_them(
    driver: Driver, shop: Shop
) -> None:
    stranger = USER + 1
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]

    paid = driver.payment_update(stranger, payload, "XTR", 150, "charge-x")
    calls = await driver.deliver(paid)
    await driver.deliver(paid)  # Telegram delivering it again

    tr = load_translator()
    assert texts(calls) == [tr.t("en", "payment.foreign_payer")]
    assert [c.params["chat_id"] for c in by_method(calls, "sendMessage")] == [stranger]
    assert shop.alerts.alert_keys() == [f"payment_foreign_payer:stars:{payload}"]
    rows = await shop.fetch("select user_id, status, refused from payments order by created_at")
    assert rows == [
        {"user_id": USER, "status": "invoiced", "refused": None},
        {"user_id": stranger, "status": "paid", "refused": "foreign_payer"},
    ]
    assert await shop.fetch("select * from subscriptions") == []
    # the admin finds it on the payer's card, with a button to refund it to them
    recorded = await shop.value("select id::text from payments where refused is not null")
    calls = await driver.send(ADMIN, f"/user {stranger}")
    assert "paid (foreign_payer)" in texts(calls)[0]
    refund = kb.AdminCb(action="refund", arg=recorded).pack()
    assert refund in [b.get("callback_data") for b in buttons(calls)]
    # the owner pays their own invoice: credited to them
    await driver.deliver(driver.payment_update(USER, payload, "XTR", 150, "charge-own"))
    assert await shop.fetch("select user_id from subscriptions") == [{"user_id": USER}]


async def test_pre_checkout_refuses_what_does_not_match(driver: Driver) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="card"))
    (invoice,) = by_method(calls, "sendInvoice")
    payload = invoice.params["payload"]
    assert invoice.params["provider_token"] and invoice.params["currency"] == "RUB"
    wrong_amount = await driver.pre_checkout(USER, payload, "RUB", 100)
    wrong_currency = await driver.pre_checkout(USER, payload, "XTR", 19900)
    unknown = await driver.pre_checkout(USER, "not-an-intent", "RUB", 19900)
    for calls in (wrong_amount, wrong_currency, unknown):
        (answer,) = by_method(calls, "answerPreCheckoutQuery")
        assert answer.params["ok"] is False and answer.params["error_message"]


async def test_cryptobot_gives_a_payment_link(driver: Driver, shop: Shop) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="cryptobot"))
    (sent,) = by_method(calls, "sendMessage")
    (link,) = [b for b in buttons(calls) if b.get("url")]
    invoice = shop.crypto.invoice_for(
        await shop.value("select id::text from payments where provider = 'cryptobot'")
    )
    assert link["url"] == invoice["bot_invoice_url"]
    assert "₽199.00" in sent.text


async def test_a_failing_payment_update_is_retried_and_alerts(
    driver: Driver, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]
    billing = shop.billing

    async def broken(confirmed: Any) -> Any:
        raise RuntimeError("a bug in crediting")

    monkeypatch.setattr(billing, "confirm", broken)
    paid = driver.payment_update(USER, payload, "XTR", 150, "charge-9")
    calls = await driver.deliver(paid)
    assert "We received your payment" in by_method(calls, "sendMessage")[0].text
    (alert,) = [a for a in shop.alerts.alerts if a.key.startswith("bot_payment_update:")]
    assert alert.severity is Severity.CRITICAL
    row = (
        await shop.fetch(
            "select attempts, processed_at, last_error from telegram_updates where update_id = $1",
            paid["update_id"],
        )
    )[0]
    assert row["processed_at"] is None and "a bug in crediting" in row["last_error"]
    # after the fix, the retry credits it
    monkeypatch.undo()
    await shop.db.transaction(_due_now)
    claimed = await inbox.claim(shop.db, owner="t", limit=10, claim_seconds=60)
    assert [u.update_id for u in claimed] == [paid["update_id"]]
    await driver.tb.processor.process(claimed, driver.tb.on_asyncio(driver.bot))
    assert await shop.value("select status from payments") == "finalized"


async def _due_now(conn: Any) -> None:
    await conn.execute("update telegram_updates set claim_expires_at = now()")


async def test_a_transient_failure_apologises_once_and_retries(
    driver: Driver, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def database_away(user_id: int, **kwargs: Any) -> Any:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(driver.tb.svc, "touch", database_away)
    update = driver.message(USER, "ru", text="/start")
    calls = await driver.deliver(update)
    (apology,) = by_method(calls, "sendMessage")
    assert apology.text == load_translator().t("ru", "errors.apology")
    row = (await shop.fetch("select attempts, processed_at from telegram_updates"))[0]
    assert row == {"attempts": 1, "processed_at": None}


async def test_telegram_unreachable_costs_no_attempt_and_no_apology(
    driver: Driver, shop: Shop
) -> None:
    driver.session.fail_next(
        "sendMessage", TelegramNetworkError(method=SendMessage(chat_id=1, text="x"), message="down")
    )
    update = driver.message(USER, "ru", text="/start")
    calls = await driver.deliver(update)
    assert len(by_method(calls, "sendMessage")) == 1  # the menu that failed, no apology
    (row,) = await shop.fetch("select attempts, processed_at, last_error from telegram_updates")
    assert row["attempts"] == 0 and row["processed_at"] is None
    assert row["last_error"].startswith(inbox.WAITING_FOR_TELEGRAM)
    assert driver.tb.link.down
    # Telegram answers again: the update is due at once and goes through
    assert await driver.tb.processor.telegram_answers_again() == 1
    claimed = await inbox.claim(shop.db, owner="t", limit=10, claim_seconds=60)
    assert [(u.update_id, u.attempts) for u in claimed] == [(update["update_id"], 1)]


# -- admins ------------------------------------------------------------------------------

ADMIN_COMMANDS = [
    "/admin",
    "/stats",
    "/status",
    f"/user {USER}",
    f"/grant {USER} 30",
    "/refund 0b7c1c38-3c0e-4c47-9d43-38bb2a7c5b11",
    "/broadcast all Hello everyone",
]


async def test_a_non_admin_reaches_no_admin_function(driver: Driver, shop: Shop) -> None:
    unknown = load_translator().t("en", "errors.unknown_command")
    await driver.send(USER, "/start")
    for command in ADMIN_COMMANDS:
        calls = await driver.send(USER, command)
        assert texts(calls) == [unknown], command
    stale = load_translator().t("en", "errors.stale_button")
    for data in (
        kb.AdminCb(action="stats"),
        kb.AdminCb(action="status"),
        kb.AdminCb(action="grant", arg=str(USER), n=30),
        kb.AdminCb(action="user", arg=str(USER)),
        kb.AdminCb(action="refund_yes", arg="0b7c1c38-3c0e-4c47-9d43-38bb2a7c5b11"),
        kb.AdminCb(action="bc_go", n=1),
    ):
        calls = await driver.press(USER, data)
        assert [(c.method, c.params.get("text")) for c in calls] == [("answerCallbackQuery", stale)]
    assert await shop.value("select count(*) from subscriptions") == 0
    assert await shop.value("select count(*) from broadcasts") == 0
    assert await shop.value("select count(*) from outbox") == 0


async def test_admin_statistics_status_and_user_card(driver: Driver, shop: Shop) -> None:
    await driver.press(USER, kb.Nav(to="trial"))
    calls = await driver.send(ADMIN, "/stats")
    assert "Users: 2" in texts(calls)[0]  # the user and the admin
    calls = await driver.send(ADMIN, "/status")
    assert "System: healthy" in texts(calls)[0] and "bot: running" in texts(calls)[0]
    calls = await driver.send(ADMIN, f"/user @user{USER}")
    assert f"User {USER} @user{USER}" in texts(calls)[0] and "trial" in texts(calls)[0]
    calls += await driver.send(ADMIN, "/admin", lang="ru")
    assert_translated(calls)


async def test_admin_grants_days_once_per_command(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    update = driver.message(ADMIN, text=f"/grant {USER} 30")
    calls = await driver.deliver(update)
    assert "Done: subscription" in texts(calls)[0]
    expires = await shop.value("select expires_at from subscriptions where user_id = $1", USER)
    # the same update run again (a crash before it was marked processed) changes nothing
    await shop.value(
        "update telegram_updates set processed_at = null, claim_expires_at = null"
        " where update_id = $1 returning 1",
        update["update_id"],
    )
    calls = await driver.deliver()
    assert "This was done already" in texts(calls)[0]
    assert (
        await shop.value("select expires_at from subscriptions where user_id = $1", USER) == expires
    )
    assert await shop.value("select count(*) from outbox where dedup_key like 'admin:%'") == 1


async def test_admin_broadcast_preview_confirm_and_progress(driver: Driver, shop: Shop) -> None:
    for uid in (701, 702, 703):
        await driver.send(uid, "/start")
    calls = await driver.send(ADMIN, "/broadcast all New servers in Finland!")
    assert texts(calls)[0] == "New servers in Finland!"  # the preview, then the count
    assert "4 recipients" in texts(calls)[1]  # three users and the admin
    go = next(b for b in buttons(calls) if "bc_go" in b["callback_data"])
    calls = await driver.press(ADMIN, go["callback_data"], on_text=texts(calls)[1])
    assert "sending 4 messages" in by_method(calls, "editMessageText")[0].text
    again = await driver.press(ADMIN, go["callback_data"])  # a second press sends nothing more
    assert "sending 4 messages" in texts(again)[0]
    jobs = await shop.fetch("select payload from outbox where dedup_key like 'broadcast:%'")
    assert len(jobs) == 4 and jobs[0]["payload"]["params"] == {"text": "New servers in Finland!"}
    # the notifier delivers them; the bot reports the final count once
    await shop.db.transaction(_deliver_all)
    await driver.tb.report_broadcasts(driver.bot)
    calls = driver.session.take()
    final = [c for c in calls if "delivered 4, blocked 0, failed 0 of 4" in (c.text or "")]
    assert [c.method for c in final] == ["editMessageText"]  # in place of the progress
    await driver.tb.report_broadcasts(driver.bot)
    assert driver.session.take() == []


async def _deliver_all(conn: Any) -> None:
    await conn.execute("update outbox set status = 'done' where dedup_key like 'broadcast:%'")


def test_callback_data_fits_telegrams_limit() -> None:
    longest = kb.AdminCb(action="refund_manual", arg="0b7c1c38-3c0e-4c47-9d43-38bb2a7c5b11")
    assert len(longest.pack().encode()) <= 64
    assert len(kb.BuyCb(plan="p" * 32, provider="cryptobot").pack().encode()) <= 64
    balance = kb.BalanceCb(plan="p" * 32, sub=10**10 - 1, at=2**33)  # past the year 2200
    assert len(balance.pack().encode()) <= 64


async def test_blocking_the_bot_is_recorded(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/start")
    bot_user = {"id": 1, "is_bot": True, "first_name": "Bot"}
    await driver.deliver(
        {
            "update_id": 99,
            "my_chat_member": {
                "chat": {"id": USER, "type": "private"},
                "from": driver.person(USER),
                "date": int(time.time()),
                "old_chat_member": {"user": bot_user, "status": "member"},
                "new_chat_member": {"user": bot_user, "status": "kicked", "until_date": 0},
            },
        }
    )
    blocked = "select blocked_bot_at is not null from users where telegram_id = $1"
    assert await shop.value(blocked, USER)
    await driver.send(USER, "/start")  # writing again unblocks
    assert not await shop.value(blocked, USER)


async def test_top_up_by_card_credits_the_balance_once(driver: Driver, shop: Shop) -> None:
    calls = await driver.press(USER, kb.TopUpCb(amount=10000))
    providers = [b["text"] for b in buttons(calls)]
    assert "💳 Bank card" in providers and "⭐ Telegram Stars" not in providers  # RUB only
    calls = await driver.press(USER, kb.TopUpCb(amount=10000, provider="card"))
    (invoice,) = by_method(calls, "sendInvoice")
    assert invoice.params["currency"] == "RUB" and invoice.params["prices"][0]["amount"] == 10000
    payload = invoice.params["payload"]
    assert by_method(
        await driver.pre_checkout(USER, payload, "RUB", 10000), "answerPreCheckoutQuery"
    )[0].params["ok"]
    for _ in range(2):
        await driver.deliver(driver.payment_update(USER, payload, "RUB", 10000, "card-1"))
    assert await shop.value("select balance_minor from users where telegram_id = $1", USER) == (
        10000
    )
    calls = await driver.press(USER, kb.Nav(to="home"))
    assert "💰 Balance: ₽100.00" in labels(calls)


async def test_settings_auto_renew_and_help(driver: Driver, shop: Shop) -> None:
    calls = await driver.press(USER, kb.AutoRenewCb(on=1))
    assert "Auto-renew: on" in texts(calls)[0]
    assert await shop.value("select auto_renew from users where telegram_id = $1", USER)
    calls = await driver.press(USER, kb.AutoRenewCb(on=0))
    assert "Auto-renew: off" in texts(calls)[0]
    assert not await shop.value("select auto_renew from users where telegram_id = $1", USER)
    calls = await driver.send(USER, "/help")
    assert "@vpn_support" in texts(calls)[0]


async def test_the_balance_pays_for_a_plan_once_when_it_covers_the_price(
    driver: Driver, shop: Shop
) -> None:
    def balance_buttons(calls: list[Call]) -> list[dict[str, Any]]:
        return [b for b in buttons(calls) if b["text"].startswith("💰 Pay from balance")]

    async def set_balance(amount: int) -> None:
        await shop.value(
            "update users set balance_minor = $2 where telegram_id = $1 returning 1", USER, amount
        )

    await driver.send(USER, "/start")
    await set_balance(19899)
    assert balance_buttons(await driver.press(USER, kb.PlanCb(plan="month"))) == []
    await set_balance(50000)
    calls = await driver.press(USER, kb.PlanCb(plan="month"))
    (button,) = balance_buttons(calls)
    assert button["text"] == "💰 Pay from balance (₽199.00)"
    screens = []
    for _ in range(2):  # a double click
        screens += by_method(await driver.press(USER, button["callback_data"]), "editMessageText")
    assert len(screens) == 2
    for screen in screens:
        assert screen.text.startswith("Paid ₽199.00 from your balance. Balance left: ₽301.00.")
    charged = await shop.fetch("select amount_minor, purpose from payments")
    assert charged == [{"amount_minor": 19900, "purpose": "renewal"}]
    assert await shop.value("select balance_minor from users where telegram_id = $1", USER) == (
        30100
    )
    [sub] = await shop.fetch("select id, expires_at from subscriptions")

    forged = kb.BalanceCb(plan="month", sub=sub["id"], at=12345)
    (screen,) = by_method(await driver.press(USER, forged), "editMessageText")
    assert "nothing was charged" in screen.text
    await set_balance(100)
    current = kb.BalanceCb(plan="month", sub=sub["id"], at=int(sub["expires_at"].timestamp()))
    calls = await driver.press(USER, current)
    (screen,) = by_method(calls, "editMessageText")
    assert screen.text == "Your balance (₽1.00) does not cover ₽199.00. Nothing was charged."
    assert "💰 Top up" in labels(calls)
    assert await shop.value("select count(*) from payments") == 1
    assert_translated(calls)


async def test_a_payment_update_met_by_a_database_outage_is_a_warning_and_retried(
    driver: Driver, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outage has its own alert (``degraded:database``); the update is tried again."""
    calls = await driver.press(USER, kb.BuyCb(plan="month", provider="stars"))
    payload = by_method(calls, "sendInvoice")[0].params["payload"]

    async def cut_off(confirmed: Any) -> Any:
        raise InfraError("connection lost", dependency=DATABASE)

    monkeypatch.setattr(shop.billing, "confirm", cut_off)
    paid = driver.payment_update(USER, payload, "XTR", 150, "charge-10")
    await driver.deliver(paid)
    (alert,) = [a for a in shop.alerts.alerts if a.key.startswith("bot_payment_update:")]
    assert alert.severity is Severity.WARNING
    assert await shop.value(
        "select processed_at is null from telegram_updates where update_id = $1",
        paid["update_id"],
    )
