"""The doors of referrals and ad links, through the real dispatcher and inbox: forged and
oversized start payloads, admin commands from someone else, tampered callback data. Each
is answered as any stranger's input is (the menu, the unknown-command or stale-button
text), records no source, and alerts nobody."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.bot import TelegramBot
from runtime.bot import keyboards as kb
from runtime.i18n import load_translator
from runtime.storage import Database
from runtime.storage import referrals as store

from .conftest import ADMIN, Alerts, Shop, build_shop, make_settings
from .recording import RecordingSession
from .test_handlers import Driver, by_method, labels, texts

USER, OTHER = 501, 502
REFERRALS = {"enabled": True, "levels": [{"reward": "fixed", "amount": 100}]}


@pytest.fixture
async def shop(db: Database, panel: Any, crypto: Any, alerts: Alerts) -> AsyncIterator[Shop]:
    settings = make_settings("http://127.0.0.1:9", referrals=REFERRALS)
    shop = build_shop(settings, db, panel, crypto, alerts)
    yield shop
    for closer in shop.closers:
        await closer.aclose()


@pytest.fixture
def driver(shop: Shop) -> Driver:
    return Driver(shop, TelegramBot(shop.services), RecordingSession())


async def menu_shown(driver: Driver, uid: int, text: str) -> None:
    calls = await driver.send(uid, text)
    (sent,) = by_method(calls, "sendMessage")
    assert sent.text.startswith(f"Hi, User{uid}!"), (text[:80], sent.text)


async def origin(shop: Shop, uid: int) -> dict[str, Any] | None:
    rows = await shop.fetch(
        "select invited_by, ad_link_id from user_origins where user_id = $1", uid
    )
    return rows[0] if rows else None


async def test_the_menu_has_the_referrals_button_and_the_screen_shows_the_link(
    driver: Driver, shop: Shop
) -> None:
    tr = load_translator()
    calls = await driver.send(USER, "/start")
    assert tr.t("en", "referrals.menu_button") in labels(calls)
    calls = await driver.press(USER, kb.Nav(to="ref"))
    (screen,) = by_method(calls, "editMessageText")
    code = await shop.value("select code from referral_codes where user_id = $1", USER)
    assert f"/start ref_{code}" in screen.text  # the test bot has no username
    assert "Invited: 0" in screen.text and "nothing yet" in screen.text
    assert "You get ₽1.00 for the first payment" in screen.text, screen.text
    again = await driver.send(USER, "/referrals")
    assert f"ref_{code}" in texts(again)[0]


@pytest.mark.parametrize(
    "payload",
    [
        "x" * 4000,
        "ref_" + "a" * 60,
        "ref_ZZZZZZZZ",
        "ref_../../etc",
        "ad_%00%00%00%00",
        "ref_abcdefgh ad_abcdefgh",
        "ref_",
        "ad_",
        "plans",
        "ref_zzzzzzzz",  # well formed, nobody's
        "ad_zzzzzzzz",
    ],
)
async def test_a_forged_or_oversized_payload_shows_the_menu_and_records_no_source(
    driver: Driver, shop: Shop, payload: str
) -> None:
    await driver.send(OTHER, "/referrals")  # someone whose code exists
    text = f"/start {payload}"
    if payload == "plans":
        calls = await driver.send(USER, text)  # the deep link's own screen answers
        assert by_method(calls, "sendMessage")
    else:
        await menu_shown(driver, USER, text)
    assert await origin(shop, USER) == {"invited_by": None, "ad_link_id": None}
    assert shop.alerts.alerts == []


async def test_the_users_own_code_and_a_second_start_change_nothing(
    driver: Driver, shop: Shop
) -> None:
    await driver.send(USER, "/referrals")
    own = await shop.value("select code from referral_codes where user_id = $1", USER)
    await menu_shown(driver, USER, f"/start ref_{own}")
    assert await origin(shop, USER) == {"invited_by": None, "ad_link_id": None}

    await driver.send(OTHER, "/start")  # started before it knew any link
    link = await store.create_ad_link(shop.db, "late", by=ADMIN, operation_key="op")
    await menu_shown(driver, OTHER, f"/start ref_{own}")
    await menu_shown(driver, OTHER, f"/start ad_{link.code}")
    assert await origin(shop, OTHER) == {"invited_by": None, "ad_link_id": None}


async def test_a_referral_link_attributes_the_first_start_once(driver: Driver, shop: Shop) -> None:
    await driver.send(USER, "/referrals")
    code = await shop.value("select code from referral_codes where user_id = $1", USER)
    update = driver.message(OTHER, text=f"/start ref_{code}")
    await driver.deliver(update)
    await driver.deliver(update)  # the same update again
    assert await origin(shop, OTHER) == {"invited_by": USER, "ad_link_id": None}
    # the invited cannot invite their inviter back
    await driver.send(OTHER, "/referrals")
    back = await shop.value("select code from referral_codes where user_id = $1", OTHER)
    await menu_shown(driver, USER, f"/start ref_{back}")
    assert await origin(shop, USER) == {"invited_by": None, "ad_link_id": None}


async def test_a_known_users_first_start_records_its_source(driver: Driver, shop: Shop) -> None:
    """A user the bot knows already (they wrote before, and nothing of their contact
    changed, so it is not written again) still has their first ``/start`` recorded."""
    await driver.send(USER, "/referrals")
    code = await shop.value("select code from referral_codes where user_id = $1", USER)
    await driver.send(OTHER, "/help")
    assert await origin(shop, OTHER) is None
    await menu_shown(driver, OTHER, f"/start ref_{code}")
    assert await origin(shop, OTHER) == {"invited_by": USER, "ad_link_id": None}


async def test_someone_elses_admin_commands_reach_nothing(driver: Driver, shop: Shop) -> None:
    tr = load_translator()
    unknown = tr.t("en", "errors.unknown_command")
    for command in ("/refstats", "/adlink new Mine", "/adlink list", "/adlink abcdefgh"):
        calls = await driver.send(USER, command)
        assert texts(calls) == [unknown], command
    stale = tr.t("en", "errors.stale_button")
    for data in (kb.AdminCb(action="refstats"), "adm:refstats:x:0"):
        calls = await driver.press(USER, data)
        assert [(c.method, c.params.get("text")) for c in calls] == [("answerCallbackQuery", stale)]
    assert await shop.value("select count(*) from ad_links") == 0
    assert await shop.value("select count(*) from audit_log") == 0
    assert shop.alerts.alerts == []


async def test_tampered_callback_data_is_a_stale_button(driver: Driver, shop: Shop) -> None:
    stale = load_translator().t("en", "errors.stale_button")
    for data in ("nav:ref:1", "nav:referrals", "ref:" + "9" * 60, "nav:" + "r" * 60):
        calls = await driver.press(USER, data)
        assert [(c.method, c.params.get("text")) for c in calls] == [("answerCallbackQuery", stale)]
    assert shop.alerts.alerts == []


async def test_an_admins_adlink_arguments_are_checked(driver: Driver, shop: Shop) -> None:
    tr = load_translator()
    usage = tr.t("en", "referrals.adlink_usage", max=store.MAX_NAME)
    for command in (
        "/adlink",
        "/adlink new",
        "/adlink new " + "n" * 65,
        "/adlink new two\nlines",
        "/adlink ABC",
        "/adlink " + "a" * 17,
        "/adlink list extra",
        "/adlink '; drop table ad_links; --",
    ):
        calls = await driver.send(ADMIN, command)
        assert texts(calls) == [usage], command
    calls = await driver.send(ADMIN, "/adlink zzzzzzzz")
    assert texts(calls) == [tr.t("en", "referrals.adlink_unknown")]
    update = driver.message(ADMIN, text="/adlink new Autumn")
    first = texts(await driver.deliver(update))
    await driver.deliver(update)  # the update again: stored once, the link made once
    assert await shop.value("select count(*) from ad_links") == 1
    code = await shop.value("select code from ad_links")
    assert first == [
        tr.t("en", "referrals.adlink_created", name="Autumn", link=f"/start ad_{code}")
    ]
    calls = await driver.send(ADMIN, "/refstats")
    assert texts(calls)[0].startswith("Referrals\nInvited users: 0")


async def test_referrals_disabled_hide_the_button_and_record_no_referrer(
    db: Database, panel: Any, crypto: Any, alerts: Alerts
) -> None:
    shop = build_shop(make_settings("http://127.0.0.1:9"), db, panel, crypto, alerts)
    try:
        driver = Driver(shop, TelegramBot(shop.services), RecordingSession())
        tr = load_translator()
        calls = await driver.send(USER, "/start")
        assert tr.t("en", "referrals.menu_button") not in labels(calls)
        calls = await driver.press(USER, kb.Nav(to="ref"))
        assert tr.t("en", "referrals.disabled") in texts(calls)
        code = await store.code_of(shop.db, USER)
        await menu_shown(driver, OTHER, f"/start ref_{code}")
        assert await origin(shop, OTHER) == {"invited_by": None, "ad_link_id": None}
    finally:
        for closer in shop.closers:
            await closer.aclose()
