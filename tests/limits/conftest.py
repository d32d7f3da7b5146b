"""A limited plan on Remnawave (the fake panel on 127.0.0.1), a traffic package, and the
services that sell and apply it, on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugins.remnawave import RemnawaveBackend, RemnawaveSettings
from runtime.access import Access
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api.payments import ConfirmedPayment
from runtime.storage import Connection, Database
from runtime.storage.payments import Verdict
from runtime.storage.subscriptions import Subscription
from runtime.testing.fakes.remnawave import FakeRemnawave
from runtime.traffic import Traffic
from tests.domain.conftest import Alerts, InChatProvider

USER = 5005
OWNER = "worker-a"
TOKEN = "remnawave-api-token-for-tests"
SQUAD = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
GIB = 2**30

SETTINGS = Settings.model_validate(
    {
        "plans": {
            "month": {
                "title": {"en": "1 month", "ru": "1 месяц"},
                "duration_days": 30,
                "backend": "remnawave",
                "prices": {"stars": {"XTR": 150}, "card": {"RUB": 19900}},
                "traffic_limit_gb": 100,
                "device_limit": 2,
            },
            "free": {
                "title": {"en": "Unlimited"},
                "duration_days": 30,
                "backend": "remnawave",
                "prices": {"stars": {"XTR": 300}},
            },
        },
        "traffic": {
            "packages": [
                {"id": "gb10", "gb": 10, "prices": {"stars": {"XTR": 50}, "card": {"RUB": 9900}}}
            ],
            "device_reset_cooldown_hours": 24,
        },
    }
)


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_settings(SETTINGS)


@pytest.fixture
async def panel() -> AsyncIterator[FakeRemnawave]:
    fake = FakeRemnawave(api_token=TOKEN, internal_squads={SQUAD: "Main"})
    async with fake.running():
        yield fake


def make_backend(panel: FakeRemnawave) -> RemnawaveBackend:
    return RemnawaveBackend(
        RemnawaveSettings.model_validate(
            {"base_url": panel.url, "api_token": TOKEN, "internal_squads": [SQUAD]}
        )
    )


@pytest.fixture
async def backend(panel: FakeRemnawave) -> AsyncIterator[RemnawaveBackend]:
    made = make_backend(panel)
    yield made
    await made.aclose()


@pytest.fixture
def access(db: Database, catalog: Catalog, backend: RemnawaveBackend, alerts: Alerts) -> Access:
    return Access(db, catalog, {"remnawave": backend}, alerts)


@pytest.fixture
def providers() -> dict[str, InChatProvider]:
    return {"stars": InChatProvider("stars"), "card": InChatProvider("card", "RUB")}


@pytest.fixture
def billing(
    db: Database, catalog: Catalog, providers: dict[str, InChatProvider], alerts: Alerts
) -> Billing:
    return Billing(db, catalog, providers, alerts, balance_currency="RUB")


@pytest.fixture
def traffic(
    db: Database, access: Access, backend: RemnawaveBackend, providers: dict[str, InChatProvider]
) -> Traffic:
    return Traffic(
        db,
        access.terms_of,
        {"remnawave": backend},
        providers,  # type: ignore[arg-type]
        SETTINGS.traffic,
        balance_currency="RUB",
    )


async def rows(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def unit(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(sql, *args)]

    return await db.transaction(unit)


async def subscribe(
    billing: Billing, access: Access, charge: str = "c1", plan: str = "month"
) -> Subscription:
    """A purchase of ``plan`` with Stars, credited and activated."""
    checkout = await billing.buy(USER, plan, "stars")
    price = checkout.payment.amount_minor
    result = await billing.confirm(
        ConfirmedPayment("stars", charge, checkout.payment.id, price, "XTR")
    )
    assert result.verdict is Verdict.CREDITED and result.subscription is not None
    await access.activate_batch(OWNER)
    return result.subscription
