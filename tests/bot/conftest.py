"""Wiring for the bot's tests: a real database, real billing and access, the built-in
payment providers and the Marzban backend against their fake peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from plugins.cryptobot.provider import CryptoBotProvider
from plugins.marzban import MarzbanBackend, MarzbanSettings
from plugins.telegram_payments import BotApiPaymentsClient, CardProvider, StarsProvider
from runtime.access import Access
from runtime.alerts import Alert
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.metrics import Metrics
from runtime.plugin_api import Services
from runtime.storage import Connection, Database
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.testing.fakes.marzban import FakeMarzban

TOKEN = "123456789:AAHbotTokenForTheBotTests0123456789"
ADMIN = 900
CARD_TOKEN = "381764678:TEST:card-provider"
CRYPTO_TOKEN = "12345:AAFakeCryptoPayAppToken0000"
PANEL_USER, PANEL_PASSWORD = "bot-admin", "panel-password-1"
WEBHOOK_SECRET = "s3cret-Webhook_token"


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def alert_keys(self) -> list[str]:
        return [a.key for a in self.alerts]


def make_settings(api_base: str, **sections: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram": {"token": TOKEN, "api_base": api_base, "admin_chat_ids": [ADMIN]},
        "plans": {
            "month": {
                "title": {"en": "1 month", "ru": "1 месяц"},
                "duration_days": 30,
                "backend": "marzban",
                "prices": {
                    "stars": {"XTR": 150},
                    "card": {"RUB": 19900},
                    "cryptobot": {"RUB": 19900},
                },
                "traffic_limit_gb": 100,
                "device_limit": 3,
            }
        },
        "trial": {"enabled": True, "backend": "marzban", "duration_hours": 24},
        "billing": {"balance_currency": "RUB", "topup_amounts": [10000, 30000]},
        "bot": {"support_contact": "@vpn_support"},
    }
    values.update(sections)
    return Settings.model_validate(values)


@dataclass
class Shop:
    """The runtime's services as the bot sees them, over fakes of every peer."""

    services: Services
    db: Database
    alerts: Alerts
    panel: FakeMarzban
    crypto: FakeCryptoBot
    closers: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def billing(self) -> Billing:
        return self.services.billing

    @property
    def access(self) -> Access:
        return self.services.access

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def unit(conn: Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(sql, *args)]

        return await self.db.transaction(unit)

    async def value(self, sql: str, *args: Any) -> Any:
        async def unit(conn: Connection) -> Any:
            return await conn.fetchval(sql, *args)

        return await self.db.transaction(unit)


def build_shop(
    settings: Settings, db: Database, panel: FakeMarzban, crypto: FakeCryptoBot, alerts: Alerts
) -> Shop:
    services = Services(settings, Metrics(), instance_id="test")
    services.provide_alerts(alerts)  # type: ignore[arg-type]
    services.provide_db(db)
    catalog = Catalog.from_settings(settings)
    payments_client = BotApiPaymentsClient(TOKEN, api_base=settings.telegram.api_base)
    providers = {
        "stars": StarsProvider(payments_client),
        "card": CardProvider(provider_token=CARD_TOKEN, currency="RUB"),
        "cryptobot": CryptoBotProvider(CRYPTO_TOKEN, base_url=f"{crypto.url}/api/"),
    }
    backend = MarzbanBackend(
        MarzbanSettings.model_validate(
            {"base_url": panel.url, "username": PANEL_USER, "password": PANEL_PASSWORD}
        )
    )
    services.provide_domain(
        Billing(db, catalog, providers, alerts, balance_currency="RUB"),
        Access(db, catalog, {"marzban": backend}, alerts),
    )
    shop = Shop(services, db, alerts, panel, crypto)
    shop.closers += [payments_client, backend, providers["cryptobot"]]
    return shop


@pytest.fixture
async def panel() -> AsyncIterator[FakeMarzban]:
    fake = FakeMarzban(admin_username=PANEL_USER, admin_password=PANEL_PASSWORD)
    async with fake.running():
        yield fake


@pytest.fixture
async def crypto() -> AsyncIterator[FakeCryptoBot]:
    fake = FakeCryptoBot(CRYPTO_TOKEN)
    async with fake.running():
        yield fake


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()
