"""reconciliation against the fake Bot API payments (getStarTransactions): paid Stars the
bot never finalized are credited once and alerted; what is refunded, too young or wrong
is not credited."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import trio

from plugins.telegram_payments import BotApiPaymentsClient, StarsProvider
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database
from runtime.testing.fakes.bot_api_payments import FakeBotApiPayments
from runtime.workers import reconciliation
from runtime.workers.reconciliation import Reconciliation

from .conftest import (
    Alerts,
    FlakyDatabase,
    Recorder,
    fast,
    fetch,
    make_services,
    supervised,
    wait_until,
)

TOKEN = "123456789:AAReconciliationTestToken000000000"
USER = 4242
CTX: Any = None


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApiPayments]:
    peer = FakeBotApiPayments(TOKEN)
    async with peer.running():
        yield peer


def wire(db: Any, settings: Settings, alerts: Alerts, fake: FakeBotApiPayments) -> Services:
    provider = StarsProvider(BotApiPaymentsClient(TOKEN, api_base=fake.url))
    services = make_services(db, settings, alerts)
    billing = Billing(
        db, Catalog.from_settings(settings), {"stars": provider}, alerts, balance_currency="RUB"
    )
    services.provide_domain(billing, None)
    return services


async def statuses(db: Database) -> list[str]:
    return [r["status"] for r in await fetch(db, "select status from payments order by created_at")]


async def test_a_lost_payment_is_credited_once_and_alerted(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeBotApiPayments
) -> None:
    services = wire(db, settings, alerts, fake)
    lost = await services.billing.buy(USER, "month", "stars")
    expired = await services.billing.buy(USER + 1, "month", "stars")
    await fetch(
        db, "update payments set status = 'expired' where id = $1::uuid", expired.payment.id
    )
    ten_minutes_ago = int(time.time()) - 600
    charge = fake.pay_stars(USER, lost.payment.id, 150, date=ten_minutes_ago)
    fake.pay_stars(USER + 1, expired.payment.id, 150, date=ten_minutes_ago)
    worker = Reconciliation(services, "owner-a")
    await worker.iteration(CTX)
    await worker.iteration(CTX)  # a second run finds nothing more
    assert await statuses(db) == ["finalized", "finalized"]
    subscriptions = await fetch(db, "select user_id from subscriptions order by user_id")
    assert [s["user_id"] for s in subscriptions] == [USER, USER + 1]
    recovered = [a for a in alerts.alerts if a.key.startswith("payment_recovered")]
    assert [a.key for a in recovered] == ["payment_recovered:stars"]  # one per run, no ids
    assert recovered[0].text.startswith("2 stars payment(s)")
    assert charge["telegram_payment_charge_id"] not in recovered[0].text
    assert lost.payment.id not in recovered[0].text
    await worker.close()


async def test_young_refunded_and_mismatched_payments_are_not_credited(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeBotApiPayments
) -> None:
    services = wire(db, settings, alerts, fake)
    young = await services.billing.buy(USER, "month", "stars")
    refunded = await services.billing.buy(USER + 1, "month", "stars")
    short = await services.billing.buy(USER + 2, "month", "stars")
    old = int(time.time()) - 3600
    fake.pay_stars(USER, young.payment.id, 150)  # its update may still be on its way
    charge = fake.pay_stars(USER + 1, refunded.payment.id, 150, date=old)
    client = BotApiPaymentsClient(TOKEN, api_base=fake.url)
    await client.refund_star_payment(USER + 1, charge["telegram_payment_charge_id"])
    await client.aclose()
    fake.pay_stars(USER + 2, short.payment.id, 100, date=old)  # not the intent's amount
    worker = Reconciliation(services, "owner-a", grace=timedelta(minutes=5))
    await worker.iteration(CTX)
    await worker.iteration(CTX)  # the mismatch is recorded: found again, alerted once
    assert await statuses(db) == ["invoiced", "invoiced", "invoiced", "paid"]
    [recorded] = await fetch(db, "select user_id, refused from payments where refused is not null")
    assert (recorded["user_id"], recorded["refused"]) == (USER + 2, "mismatch")
    assert alerts.seen() == [f"payment_mismatch:stars:{short.payment.id}"]
    await worker.close()


async def test_failures_fail_the_iteration(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeBotApiPayments
) -> None:
    flaky = FlakyDatabase(db)
    services = wire(flaky, settings, alerts, fake)
    lost = await services.billing.buy(USER, "month", "stars")
    fake.pay_stars(USER, lost.payment.id, 150, date=int(time.time()) - 600)
    fake.fail_next(502, body="<html>bad gateway</html>", times=2)
    recorder = Recorder()
    spec = fast(reconciliation.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder):

        async def credited() -> bool:
            return await statuses(db) == ["finalized"]

        await wait_until(credited)
        flaky.down = True
        await trio.sleep(0.4)
        flaky.down = False
    kinds = [f[1] for f in recorder.failures]
    assert kinds[0] == "dependency_error" and "infra_error" in kinds
