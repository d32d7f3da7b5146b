"""An admin's device reset through the bot, on Remnawave (a panel that keeps devices)
against its fake on 127.0.0.1: every device signed out with no cool-down, recorded and
told once per update, the users' own cool-down untouched, a failing panel answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.access import Access
from runtime.admin_actions import UserEditor
from runtime.billing import Billing
from runtime.bot import TelegramBot
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds
from runtime.storage.admin_actions import Edited
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.traffic import Traffic
from tests.bot.conftest import ADMIN, TOKEN, Alerts, Shop
from tests.bot.recording import RecordingSession
from tests.bot.test_handlers import Driver, texts
from tests.bot.test_moderation import run_again

from .conftest import SETTINGS as LIMITS_SETTINGS
from .conftest import USER, make_backend, rows, subscribe
from .test_bot_limits import SETTINGS


@pytest.fixture
async def shop(db: Database, panel: FakeRemnawave, alerts: Alerts) -> AsyncIterator[Shop]:
    settings = Settings.model_validate(
        {
            **SETTINGS,
            "telegram": {
                "token": TOKEN,
                "api_base": "http://127.0.0.1:9",
                "admin_chat_ids": [ADMIN],
            },
        }
    )
    services = Services(settings, Metrics(), instance_id="test")
    services.provide_alerts(alerts)  # type: ignore[arg-type]
    services.provide_db(db)
    catalog = Catalog.from_settings(settings)
    client = BotApiPaymentsClient(TOKEN, api_base=settings.telegram.api_base)
    backend = make_backend(panel)
    services.provide_domain(
        Billing(db, catalog, {"stars": StarsProvider(client)}, alerts, balance_currency="RUB"),
        Access(db, catalog, {"remnawave": backend}, alerts),
    )
    yield Shop(services, db, alerts, panel, None)  # type: ignore[arg-type]
    await client.aclose()
    await backend.aclose()


@pytest.fixture
def driver(shop: Shop) -> Driver:
    return Driver(shop, TelegramBot(shop.services), RecordingSession())


async def account_with_devices(driver: Driver, shop: Shop, *hwids: str) -> str:
    await driver.send(USER, "/start")
    await driver.send(ADMIN, f"/giveplan {USER} month")
    assert await shop.access.activate_batch("test") == 1
    account = await shop.value("select vpn_account from subscriptions where user_id = $1", USER)
    for hwid in hwids:
        assert shop.panel.add_device(account, hwid)  # type: ignore[attr-defined]
    return str(account)


def devices_of(panel: FakeRemnawave, account: str) -> list[str]:
    user = panel.user(account)
    assert user is not None
    return [d["hwid"] for d in panel.devices.get(user["id"], [])]


async def test_an_admin_resets_devices_once_per_update_without_a_cool_down(
    driver: Driver, shop: Shop, panel: FakeRemnawave
) -> None:
    account = await account_with_devices(driver, shop, "hw-1", "hw-2")
    update = driver.message(ADMIN, text=f"/resetdevices {USER} lost phone")
    (text,) = texts(await driver.deliver(update))
    assert text == f"Done: 2 devices of user {USER} were signed out (subscription #1)."
    assert devices_of(panel, account) == []

    assert panel.add_device(account, "hw-3")
    await run_again(shop, update["update_id"])
    assert texts(await driver.deliver()) == ["This was done already."]
    assert devices_of(panel, account) == ["hw-3"]  # the update ran once

    (text,) = texts(await driver.send(ADMIN, f"/resetdevices {USER}"))  # right away: no wait
    assert text == f"Done: 1 device of user {USER} was signed out (subscription #1)."
    assert devices_of(panel, account) == []
    entries = await shop.fetch(
        "select actor, reason from audit_log where action = 'devices.reset' order by id"
    )
    assert entries == [
        {"actor": f"admin:{ADMIN}", "reason": "lost phone"},
        {"actor": f"admin:{ADMIN}", "reason": None},
    ]
    told = await shop.fetch(
        "select payload from outbox where kind = $1"
        " and payload->>'template' = 'admin_actions_devices_reset'",
        job_kinds.NOTIFY,
    )
    assert [t["payload"]["chat_id"] for t in told] == [USER, USER]
    assert await shop.value("select count(*) from device_resets") == 0  # the user's own reset


async def test_a_failing_panel_is_answered_and_records_nothing(
    driver: Driver, shop: Shop, panel: FakeRemnawave, alerts: Alerts
) -> None:
    account = await account_with_devices(driver, shop, "hw-1")
    panel.fail_next(500, path_prefix="/api/hwid/devices/delete")
    (text,) = texts(await driver.send(ADMIN, f"/resetdevices {USER}"))
    assert text == "The panel did not answer: nothing was reset. Try again in a moment."
    assert devices_of(panel, account) == ["hw-1"]
    assert await shop.value("select count(*) from audit_log where action = 'devices.reset'") == 0
    assert alerts.alerts == []
    (text,) = texts(await driver.send(ADMIN, f"/resetdevices {USER}"))
    assert text.startswith("Done: 1 device")


async def test_twenty_attempts_of_one_reset_record_it_once(
    db: Database, billing: Billing, access: Access, traffic: Traffic, panel: FakeRemnawave
) -> None:
    subscription = await subscribe(billing, access)
    account = subscription.vpn_account or ""
    for hwid in ("a", "b"):
        assert panel.add_device(account, hwid)
    editor = UserEditor(
        db,
        Catalog.from_settings(LIMITS_SETTINGS),
        lambda: traffic,
        default_backend=lambda: "remnawave",
        max_attempts=3,
    )
    results: list[Edited] = []

    async def one() -> None:
        _, done = await editor.reset_devices(str(USER), by=ADMIN, key="update:77")
        assert done is not None
        results.append(done)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert len(results) == 20
    assert len([r for r in results if r.changed]) == 1
    assert all(r.repeated for r in results if not r.changed)
    assert devices_of(panel, account) == []
    assert await rows(db, "select count(*) as n from audit_log where action = 'devices.reset'") == [
        {"n": 1}
    ]
