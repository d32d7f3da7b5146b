"""Promo codes end to end: real aiogram against the Telegram emulator, real PostgreSQL,
Stars and the Marzban panel against their fakes, in English and in Russian."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from runtime.billing import Billing
from runtime.bot import keyboards as kb
from runtime.catalog import Catalog
from runtime.i18n import format_date, load_translator
from runtime.storage import Database, grants
from runtime.storage import promo as store
from runtime.storage.promo import Kind, NewCode
from runtime.testing.telegram import SimUser, TelegramEmulator

from .conftest import ADMIN, TOKEN, Alerts, Shop, build_shop, make_settings
from .test_e2e import assert_transcript_translated, bot_settings, eventually, running, shown

TR = load_translator()
NAMES = {"en": "Ann", "ru": "Vera"}


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(TOKEN, pre_checkout_timeout=10.0)
    async with emulator.running():
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture
def mode() -> str:
    return "polling"


@pytest.fixture
async def shop(
    db: Database, panel: Any, crypto: Any, alerts: Alerts, emulator: TelegramEmulator
) -> AsyncIterator[Shop]:
    """The bot's shop with discounts on, as ``[promo] enabled`` gives in production."""
    settings = make_settings(emulator.url, bot=bot_settings("polling"))
    shop = build_shop(settings, db, panel, crypto, alerts)
    billing = Billing(
        db,
        Catalog.from_settings(settings),
        shop.billing.providers,
        alerts,
        balance_currency="RUB",
        discounts_enabled=True,
    )
    shop.services.provide_domain(billing, shop.access)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


async def make_code(shop: Shop, code: str, kind: Kind, amount: int) -> None:
    await store.create(shop.db, NewCode(code, kind, amount), actor=grants.admin_actor(ADMIN))


def person(emulator: TelegramEmulator, lang: str) -> SimUser:
    return emulator.create_user(first_name=NAMES[lang], language_code=lang)


@pytest.mark.parametrize("lang", ["en", "ru"])
async def test_a_days_code_extends_the_subscription(
    emulator: TelegramEmulator, shop: Shop, lang: str
) -> None:
    await make_code(shop, "WEEK", Kind.DAYS, 7)
    user = person(emulator, lang)
    async with running(shop):
        user.send_command("trial")
        await shown(emulator, user, TR.t(lang, "trial.started", expires="")[:15])
        before = await shop.value("select expires_at from subscriptions")
        hello = user.send_command("start")
        menu = await user.wait_for_message(after=hello)
        user.press(menu, text=TR.t(lang, "promo.button"))
        await shown(emulator, user, "/promo")
        user.send_command("promo", "week")  # any case
        added = TR.t(lang, "promo.days_added", code="WEEK", days="", expires="")[:20]
        reply = await shown(emulator, user, added)
        after = await shop.value("select expires_at from subscriptions")
        assert after - before == timedelta(days=7)
        assert TR.t(lang, "time.days", count=7) in reply.content
        assert format_date(after, language=lang) in reply.content
        user.send_command("promo", "WEEK")
        await shown(emulator, user, TR.t(lang, "promo.already_used", code="WEEK"))
        user.send_command("subscription")
        await shown(emulator, user, format_date(after, language=lang))
        assert await shop.value("select count(*) from subscriptions") == 1
        assert_transcript_translated(emulator, user)
    assert shop.alerts.alerts == []


@pytest.mark.parametrize("lang", ["en", "ru"])
async def test_a_discount_code_makes_the_plan_and_invoice_cheaper_and_the_payment_credits(
    emulator: TelegramEmulator, shop: Shop, lang: str
) -> None:
    await make_code(shop, "NEXT20", Kind.NEXT_DISCOUNT, 20)
    user = person(emulator, lang)
    async with running(shop):
        user.send_command("promo", "next20")
        await shown(emulator, user, "20%")
        hello = user.send_command("buy")
        plans = await user.wait_for_message(after=hello)
        off = TR.t(lang, "promo.discounted_price", price="", percent=20).strip()
        assert any(off in b.text for row in plans.buttons() for b in row)
        user.press(plans, data=kb.PlanCb(plan="month").pack())
        choose = TR.t(lang, "plans.details", title="", duration="", limits="").split("\n")[-1]
        plan = await shown(emulator, user, choose)
        stars = TR.t(lang, "providers.stars")
        button = next(b for row in plan.buttons() for b in row if stars in b.text)
        assert "120" in button.text and off in button.text
        user.press(plan, text=stars)
        invoice = await user.wait_for_message(lambda m: m.invoice is not None)
        assert invoice.invoice is not None and invoice.invoice.total_amount == 120
        assert (await user.pay(invoice)).ok
        await eventually(shop, "select status from payments", "finalized")
        rows = await shop.fetch(
            "select amount_minor, original_amount_minor, discount_percent from payments"
        )
        assert rows == [{"amount_minor": 120, "original_amount_minor": 150, "discount_percent": 20}]
        assert (
            await shop.value("select count(*) from promo_next_discounts where used_by is null") == 0
        )
        assert await shop.value("select count(*) from subscriptions where kind = 'paid'") == 1
        assert_transcript_translated(emulator, user)
    assert shop.alerts.alerts == []


@pytest.mark.parametrize("lang", ["en", "ru"])
async def test_an_admin_creates_lists_and_disables_a_code(
    emulator: TelegramEmulator, shop: Shop, lang: str
) -> None:
    admin = emulator.create_user(first_name="Boss", language_code=lang, user_id=ADMIN)
    user = person(emulator, lang)
    async with running(shop):
        admin.send_command("promo_new", "spring kind=balance value=5000 max=2 until=2099-01-31")
        await shown(emulator, admin, "SPRING")
        user.send_command("promo", "SPRING")
        added = TR.t(lang, "promo.balance_added", code="SPRING", amount="", balance="")
        await shown(emulator, user, added[:20])
        admin.send_command("promos")
        listing = await shown(emulator, admin, TR.t(lang, "promo.admin_list_header"))
        assert "SPRING" in listing.content and "1/2" in listing.content
        admin.press(listing, text=TR.t(lang, "promo.admin_info_button", code="SPRING"))
        info = await shown(emulator, admin, str(user.id))
        admin.press(info, text=TR.t(lang, "promo.admin_off_button"))
        await shown(emulator, admin, TR.t(lang, "promo.admin_disabled", code="SPRING")[:12])
        other = emulator.create_user(first_name="Zoe", language_code=lang)
        other.send_command("promo", "spring")
        await shown(emulator, other, TR.t(lang, "promo.disabled", code="SPRING"))
        assert_transcript_translated(emulator, admin)
    actions = await shop.fetch("select action, actor from audit_log order by id")
    assert {"action": "promo.create", "actor": f"admin:{ADMIN}"} in actions
    assert {"action": "promo.disable", "actor": f"admin:{ADMIN}"} in actions
    assert (
        await shop.value("select balance_minor from users where telegram_id = $1", user.id) == 5000
    )
