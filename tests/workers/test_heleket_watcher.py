"""The payment watcher finds a paid Heleket invoice whose webhook never came, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from plugins.heleket import HeleketProvider
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.storage import Database
from runtime.testing.fakes.heleket import FakeHeleket
from runtime.workers.payment_watcher import PaymentWatcher

from .conftest import Alerts, fetch, make_services

USER = 9002
AMOUNT = 500


@pytest.fixture
async def fake() -> AsyncIterator[FakeHeleket]:
    peer = FakeHeleket()
    async with peer.running():
        yield peer


async def balance(db: Database) -> int:
    rows = await fetch(db, "select balance_minor from users where telegram_id = $1", USER)
    return int(rows[0]["balance_minor"])


async def test_a_lost_webhook_is_found_by_the_watcher_once(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeHeleket
) -> None:
    provider = HeleketProvider(fake.merchant, fake.api_key, base_url=f"{fake.url}/")
    services = make_services(db, settings, alerts)
    billing = Billing(
        db, Catalog.from_settings(settings), {"heleket": provider}, alerts, balance_currency="USD"
    )
    services.provide_domain(billing, None)
    checkout = await billing.top_up(USER, AMOUNT, "heleket")
    open_one = await billing.top_up(USER, AMOUNT, "heleket")
    fake.pay(checkout.invoice.external_id or "")  # no webhook_url: the delivery is lost
    watcher = PaymentWatcher(services, f"owner-{uuid.uuid4().hex[:6]}")

    assert await watcher.watch(provider) == 1
    assert await balance(db) == AMOUNT
    assert await watcher.watch(provider) == 0
    assert await balance(db) == AMOUNT
    rows = await fetch(db, "select external_id, status from payments order by external_id")
    statuses = {r["external_id"]: r["status"] for r in rows}
    assert statuses[checkout.invoice.external_id] == "finalized"
    assert statuses[open_one.invoice.external_id] != "finalized"
    await watcher.close()
    await provider.aclose()
