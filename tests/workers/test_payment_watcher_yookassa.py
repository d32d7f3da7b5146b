"""YooKassa payments whose notification never came, or came late, twice, retried or racing
the payment watcher: each credited once, against the fake YooKassa API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
from starlette.routing import BaseRoute

from plugins.yookassa import YooKassaProvider
from plugins.yookassa.settings import NOTIFICATION_NETWORKS
from runtime.billing import Billing, payment_webhook_routes
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database
from runtime.testing.fakes import FakePeer
from runtime.testing.fakes.yookassa import IP_HEADER, FakeYooKassa
from runtime.workers.payment_watcher import PaymentWatcher

from .conftest import Alerts, fetch, make_services

SHOP, SECRET = "112233", "test_WatcherSecretKey_0001"
USER = 9101
AMOUNT = 19900


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    peer = FakeYooKassa(SHOP, SECRET)
    async with peer.running():
        yield peer


def wire(db: Any, settings: Settings, alerts: Alerts, fake: FakeYooKassa) -> Services:
    provider = YooKassaProvider(
        SHOP,
        SECRET,
        base_url=f"{fake.url}/v3/",
        client_ip_header=IP_HEADER,
        networks=NOTIFICATION_NETWORKS,
    )
    services = make_services(db, settings, alerts)
    billing = Billing(
        db, Catalog.from_settings(settings), {"yookassa": provider}, alerts, balance_currency="RUB"
    )
    services.provide_domain(billing, None)
    return services


async def top_ups(services: Services, count: int) -> list[str]:
    """``count`` top-ups checked out through billing: payments pending at the fake."""
    await fetch(
        services.db, "insert into users (telegram_id) values ($1) on conflict do nothing", USER
    )
    made = [await services.billing.top_up(USER, AMOUNT, "yookassa") for _ in range(count)]
    return [checkout.invoice.external_id or "" for checkout in made]


async def balance(db: Database) -> int:
    rows = await fetch(db, "select balance_minor from users where telegram_id = $1", USER)
    return int(rows[0]["balance_minor"])


async def test_a_payment_whose_notification_never_came_is_found_by_the_watcher(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeYooKassa
) -> None:
    services = wire(db, settings, alerts, fake)
    paid, pending, canceled = await top_ups(services, 3)
    fake.pay(paid)
    fake.cancel(canceled)
    watcher = PaymentWatcher(services, "owner-a")
    await watcher.iteration(None)  # type: ignore[arg-type]
    assert await balance(db) == AMOUNT
    await watcher.iteration(None)  # type: ignore[arg-type]
    assert await balance(db) == AMOUNT  # polled again: nothing twice
    rows = await fetch(db, "select external_id, status from payments order by external_id")
    assert {r["external_id"]: r["status"] for r in rows}[paid] == "finalized"
    assert {r["external_id"]: r["status"] for r in rows}[pending] == "invoiced"
    assert not alerts.alerts
    await watcher.close()


async def test_notifications_and_the_watcher_racing_credit_once(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeYooKassa
) -> None:
    services = wire(db, settings, alerts, fake)
    payments = await top_ups(services, 8)
    for payment_id in payments:
        fake.pay(payment_id)
    watchers = [PaymentWatcher(services, f"owner-{i}") for i in range(2)]

    async def notify(payment_id: str) -> None:
        await services.billing.webhook("yookassa", *fake.notification(payment_id))

    async with trio.open_nursery() as nursery:
        for payment_id in payments + payments[::2]:  # every one, and half of them twice
            nursery.start_soon(notify, payment_id)
        for watcher in watchers:
            nursery.start_soon(watcher.watch, services.billing.provider("yookassa"))
    assert await balance(db) == len(payments) * AMOUNT
    assert not alerts.alerts


class _Shop(FakePeer):
    """The bot's public payment webhook, served on loopback; billing not ready at first."""

    def __init__(self, billing: Billing, provider: YooKassaProvider, not_ready: int) -> None:
        super().__init__()
        self.billing = billing
        self.provider = provider
        self.not_ready = not_ready

    def _billing(self) -> Billing:
        if self.not_ready > 0:
            self.not_ready -= 1
            raise RuntimeError("not connected yet")
        return self.billing

    def routes(self) -> Sequence[BaseRoute]:
        return payment_webhook_routes(self._billing, providers=[self.provider])


async def test_a_notification_is_sent_again_until_answered_and_a_duplicate_credits_once(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeYooKassa
) -> None:
    services = wire(db, settings, alerts, fake)
    provider = services.billing.provider("yookassa")
    assert isinstance(provider, YooKassaProvider)
    (payment_id,) = await top_ups(services, 1)
    shop = _Shop(services.billing, provider, not_ready=2)
    async with shop.running() as url:
        fake.webhook_url = f"{url}/webhooks/payments/yookassa"
        fake.pay(payment_id)
        assert await fake.notify(payment_id, attempts=5) == 200
        assert fake.webhook_results == [503, 503, 200]
        assert await balance(db) == AMOUNT
        assert await fake.notify(payment_id) == 200  # YooKassa's duplicate
        assert await balance(db) == AMOUNT
    assert not alerts.alerts
