"""The bot's limits screens through the Telegram emulator, with the real dispatcher,
real PostgreSQL, Stars payments and the Remnawave backend against its fake panel: used
traffic in "My subscription" (English and Russian), extra traffic bought in the chat,
and devices listed and reset with a cool-down the database keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugins.telegram_payments import BotApiPaymentsClient, CardProvider, StarsProvider
from runtime.access import Access
from runtime.billing import Billing
from runtime.bot import TelegramBot
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.i18n import load_translator
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Database
from runtime.storage.payments import Verdict
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.testing.telegram import SimUser, TelegramEmulator
from tests.bot.conftest import ADMIN, CARD_TOKEN, TOKEN, Alerts, Shop
from tests.bot.recording import RecordingSession
from tests.bot.test_e2e import assert_transcript_translated, eventually, press, running, shown
from tests.bot.test_handlers import Driver

from .conftest import GIB, SQUAD, make_backend

SETTINGS: dict[str, Any] = {
    "plans": {
        "month": {
            "title": {"en": "1 month", "ru": "1 месяц"},
            "duration_days": 30,
            "backend": "remnawave",
            "prices": {"stars": {"XTR": 150}, "card": {"RUB": 19900}},
            "traffic_limit_gb": 100,
            "device_limit": 2,
        }
    },
    "traffic": {
        "packages": [
            {"id": "gb10", "gb": 10, "prices": {"stars": {"XTR": 50}, "card": {"RUB": 9900}}}
        ],
        "usage_cache_seconds": 0.001,
        "panel_timeout_seconds": 1.0,
        "device_reset_cooldown_hours": 24,
    },
    "billing": {"balance_currency": "RUB"},
}


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=10.0)
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
async def remnawave() -> AsyncIterator[FakeRemnawave]:
    fake = FakeRemnawave(api_token="remnawave-api-token-for-tests", internal_squads={SQUAD: "M"})
    async with fake.running():
        yield fake


@pytest.fixture
async def shop(
    db: Database, remnawave: FakeRemnawave, emulator: TelegramEmulator
) -> AsyncIterator[Shop]:
    settings = Settings.model_validate(
        {
            **SETTINGS,
            "telegram": {"token": TOKEN, "api_base": emulator.url, "admin_chat_ids": [ADMIN]},
            "bot": {"mode": "polling", "polling_timeout_seconds": 1},
        }
    )
    alerts = Alerts()
    services = Services(settings, Metrics(), instance_id="test")
    services.provide_alerts(alerts)  # type: ignore[arg-type]
    services.provide_db(db)
    catalog = Catalog.from_settings(settings)
    client = BotApiPaymentsClient(TOKEN, api_base=emulator.url)
    providers = {
        "stars": StarsProvider(client),
        "card": CardProvider(provider_token=CARD_TOKEN, currency="RUB"),
    }
    backend = make_backend(remnawave)
    services.provide_domain(
        Billing(db, catalog, providers, alerts, balance_currency="RUB"),
        Access(db, catalog, {"remnawave": backend}, alerts),
    )
    shop = Shop(services, db, alerts, remnawave, None)  # type: ignore[arg-type]
    yield shop
    await client.aclose()
    await backend.aclose()


async def subscribe(shop: Shop, user: SimUser, charge: str) -> str:
    """A month bought with Stars and activated; the account's name."""
    checkout = await shop.billing.buy(user.id, "month", "stars")
    result = await shop.billing.confirm(
        ConfirmedPayment("stars", charge, checkout.payment.id, 150, "XTR")
    )
    assert result.verdict is Verdict.CREDITED and result.subscription is not None
    await shop.access.activate_batch("test-worker")
    return result.subscription.vpn_account or ""


@pytest.mark.parametrize(
    ("lang", "name", "traffic"),
    [
        ("en", "Ann", "Traffic: 30.0 GB of 100.0 GB used, 70.0 GB left"),
        ("ru", "Vera", "Трафик: использовано 30.0 ГБ из 100.0 ГБ, осталось 70.0 ГБ"),
    ],
)
async def test_usage_shown_and_traffic_bought_in_the_chat(
    emulator: TelegramEmulator, shop: Shop, lang: str, name: str, traffic: str
) -> None:
    tr = load_translator()
    panel: FakeRemnawave = shop.panel  # type: ignore[assignment]
    user = emulator.create_user(first_name=name, language_code=lang)
    async with running(shop):
        hello = user.send_command("start")  # the user's language is recorded
        await user.wait_for_message(after=hello)
        account = await subscribe(shop, user, f"c-{lang}")
        panel.use_traffic(account, 30 * GIB)
        user.send_command("subscription")
        screen = await shown(emulator, user, traffic)

        packages = await press(
            emulator,
            user,
            screen,
            tr.t(lang, "limits.traffic_button"),
            tr.t(lang, "limits.packages_title")[:30],
        )
        providers = await press(
            emulator,
            user,
            packages,
            "+10",
            tr.t(lang, "limits.package_providers", gb=10),
        )
        user.press(providers, text="Telegram Stars")
        invoice = await user.wait_for_message(lambda m: m.invoice is not None)
        assert invoice.invoice is not None and invoice.invoice.total_amount == 50
        paid = await user.pay(invoice, duplicate="same_update")
        assert paid.ok, paid
        await eventually(shop, "select count(*) from payments where status = 'finalized'", 2)
        await eventually(shop, "select count(*) from traffic_topups", 1)
        await shop.access.activate_batch("test-worker")
        user_on_panel = panel.user(account)
        assert user_on_panel is not None and user_on_panel["trafficLimitBytes"] == 110 * GIB
        user.send_command("subscription")
        await shown(emulator, user, "110.0")
        assert (
            await shop.value("select balance_minor from users where telegram_id = $1", user.id) == 0
        )
        assert_transcript_translated(emulator, user)


async def test_devices_are_listed_and_reset_once_per_cooldown(
    emulator: TelegramEmulator, shop: Shop
) -> None:
    tr = load_translator()
    panel: FakeRemnawave = shop.panel  # type: ignore[assignment]
    user = emulator.create_user(first_name="Dev", language_code="en")
    async with running(shop):
        account = await subscribe(shop, user, "c-dev")
        assert panel.add_device(account, "hw-1", platform="iOS", model="iPhone\n15")
        assert panel.add_device(account, "hw-2", platform="Android", model="Pixel 8")
        user.send_command("subscription")
        screen = await shown(emulator, user, "Traffic:")
        listed = await press(
            emulator, user, screen, tr.t("en", "limits.devices_button"), "(2 of 2)"
        )
        assert "1. iOS iPhone 15" in listed.content and "2. Android Pixel 8" in listed.content
        done = await press(
            emulator,
            user,
            listed,
            tr.t("en", "limits.reset_button"),
            tr.t("en", "limits.reset_done", count=2),
        )
        user_on_panel = panel.user(account)
        assert user_on_panel is not None and panel.devices[user_on_panel["id"]] == []

        assert panel.add_device(account, "hw-3")
        screen = await press(emulator, user, done, tr.t("en", "menu.subscription"), "Traffic:")
        listed = await press(
            emulator, user, screen, tr.t("en", "limits.devices_button"), "(1 of 2)"
        )
        await press(
            emulator,
            user,
            listed,
            tr.t("en", "limits.reset_button"),
            "The next reset is possible after",
        )
        assert len(panel.devices[user_on_panel["id"]]) == 1, "the cool-down held"
        audit = await shop.value("select count(*) from audit_log where action = 'devices_reset'")
        assert audit == 1


async def test_forged_buttons_change_nothing(emulator: TelegramEmulator, shop: Shop) -> None:
    """Callback data is a door: another user's subscription, a number no bigint holds, a
    package that does not exist, a malformed number: each is answered, nothing is bought
    or reset, nobody is alerted."""
    panel: FakeRemnawave = shop.panel  # type: ignore[assignment]
    owner = emulator.create_user(first_name="Own", language_code="en")
    account = await subscribe(shop, owner, "c-own")
    assert panel.add_device(account, "hw-1")
    sub = await shop.value("select id from subscriptions where user_id = $1", owner.id)
    driver = Driver(shop, TelegramBot(shop.services), RecordingSession())
    eve = owner.id + 1
    for data in (
        f"ldrs:{sub}",
        f"ldev:{sub}",
        f"ltr:{sub}",
        f"ltb:{sub}:gb10:stars",
        f"ldrs:{10**30}",
        f"ltb:{10**30}:gb10:stars",
        f"ltb:{sub}:nope:stars",
        f"ltb:{sub}:gb10:nope",
        "ldev:-5",
        "ldev:abc",
        "ltr:" + "9" * 40,
    ):
        calls = await driver.press(eve, data)
        assert calls, data
        methods = {c.method for c in calls}
        assert methods <= {"answerCallbackQuery", "editMessageText", "sendMessage"}, data
    assert await shop.value("select count(*) from device_resets") == 0
    assert await shop.value("select count(*) from payments where purpose = 'topup'") == 0
    user_on_panel = panel.user(account)
    assert user_on_panel is not None and len(panel.devices[user_on_panel["id"]]) == 1
    assert shop.alerts.alerts == []  # type: ignore[attr-defined]
    failed = await shop.value("select count(*) from telegram_updates where processed_at is null")
    assert failed == 0


@pytest.mark.parametrize("fault", ["hangs", "fails", "lies"])
async def test_a_panel_that_hangs_fails_or_lies_does_not_break_the_screen(
    emulator: TelegramEmulator, shop: Shop, fault: str
) -> None:
    tr = load_translator()
    panel: FakeRemnawave = shop.panel  # type: ignore[assignment]
    user = emulator.create_user(first_name="Lia", language_code="en")
    async with running(shop):
        account = await subscribe(shop, user, f"c-{fault}")
        if fault == "hangs":
            panel.delay_next(60, times=5)
        elif fault == "fails":
            panel.fail_next(500, times=5)
        else:
            user_on_panel = panel.user(account)
            assert user_on_panel is not None
            user_on_panel["usedTrafficBytes"] = -(2**62)
        user.send_command("subscription")
        screen = await shown(emulator, user, "1 month", seconds=10)
        expected = tr.t("en", "limits.traffic_unknown", limit="100.0")
        if fault == "lies":  # the plugin counts a negative figure as nothing used
            expected = "Traffic: 0.0 GB of 100.0 GB used"
        assert expected in screen.content
        assert "Access link" in screen.content
