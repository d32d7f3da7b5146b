"""crypto_payment_watcher against the fake Crypto Pay API: one getInvoices call per 1000
open invoices, paid ones credited once even while the webhook races, stale intents
expired, and one process polling at a time."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from plugins.cryptobot import CryptoBotProvider
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.storage import Database, job_kinds
from runtime.testing.fakes.cryptobot import FakeCryptoBot
from runtime.workers import payment_watcher
from runtime.workers.payment_watcher import PaymentWatcher

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

TOKEN = "777:AAWatcherTestToken000000"
USER = 9001
AMOUNT = 19900


@pytest.fixture
async def fake() -> AsyncIterator[FakeCryptoBot]:
    peer = FakeCryptoBot(TOKEN)
    async with peer.running():
        yield peer


def wire(db: Any, settings: Settings, alerts: Alerts, fake: FakeCryptoBot) -> Services:
    provider = CryptoBotProvider(TOKEN, base_url=f"{fake.url}/api/", currency_type="fiat")
    services = make_services(db, settings, alerts)
    billing = Billing(
        db, Catalog.from_settings(settings), {"cryptobot": provider}, alerts, balance_currency="RUB"
    )
    services.provide_domain(billing, None)
    return services


async def open_invoices(db: Database, fake: FakeCryptoBot, count: int) -> list[int]:
    """``count`` top-up intents invoiced at the fake (bulk: no HTTP per invoice)."""
    intents = [str(uuid.uuid4()) for _ in range(count)]
    invoices = [
        fake.add_invoice(currency_type="fiat", fiat="RUB", amount="199.00", payload=intent)[
            "invoice_id"
        ]
        for intent in intents
    ]
    await fetch(db, "insert into users (telegram_id) values ($1) on conflict do nothing", USER)
    await fetch(
        db,
        "insert into payments (id, user_id, provider, external_id, amount_minor, currency,"
        " status, purpose, expires_at, created_at)"
        " select i::uuid, $1, 'cryptobot', e, $2, 'RUB', 'invoiced', 'topup',"
        " now() + interval '1 hour', now() - (n || ' milliseconds')::interval"
        " from unnest($3::text[], $4::text[]) with ordinality as t(i, e, n)",
        USER,
        AMOUNT,
        intents,
        [str(i) for i in invoices],
    )
    return invoices


def get_invoices_calls(fake: FakeCryptoBot) -> int:
    return len(fake.calls(path_prefix="/api/getInvoices"))


async def balance(db: Database) -> int:
    rows = await fetch(db, "select balance_minor from users where telegram_id = $1", USER)
    return int(rows[0]["balance_minor"])


async def test_1500_open_invoices_cost_two_calls_and_paid_ones_are_credited(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    services = wire(db, settings, alerts, fake)
    invoices = await open_invoices(db, fake, 1500)
    paid = invoices[::150]  # ten of them, spread over both pages
    for invoice in paid:
        fake.pay(invoice)
    watcher = PaymentWatcher(services, "owner-a")
    assert await watcher.iteration(None) is None  # type: ignore[arg-type]
    assert get_invoices_calls(fake) == 2
    assert await balance(db) == len(paid) * AMOUNT
    rows = await fetch(
        db, "select external_id from payments where status = 'finalized' order by external_id"
    )
    assert [r["external_id"] for r in rows] == sorted(str(i) for i in paid)
    assert await watcher.iteration(None) is None  # type: ignore[arg-type]
    assert await balance(db) == len(paid) * AMOUNT  # polled again: nothing twice
    await watcher.close()


async def test_the_webhook_and_the_watcher_racing_credit_once(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    services = wire(db, settings, alerts, fake)
    invoices = await open_invoices(db, fake, 20)
    for invoice in invoices:
        fake.pay(invoice)
    watchers = [PaymentWatcher(services, f"owner-{i}") for i in range(2)]

    async def webhook(invoice: int) -> None:
        headers, body = fake.webhook_delivery(invoice)
        await services.billing.webhook("cryptobot", headers, body)

    async with trio.open_nursery() as nursery:
        for invoice in invoices:
            nursery.start_soon(webhook, invoice)
        for watcher in watchers:  # watch() itself, without the lease: a real race
            nursery.start_soon(watcher.watch, services.billing.provider("cryptobot"))
        for invoice in invoices[::2]:
            nursery.start_soon(webhook, invoice)
    assert await balance(db) == len(invoices) * AMOUNT
    notices = await fetch(db, "select count(*) as n from outbox where kind = $1", job_kinds.NOTIFY)
    assert notices[0]["n"] == len(invoices)
    assert not alerts.alerts


async def test_stale_intents_expire(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    services = wire(db, settings, alerts, fake)
    await open_invoices(db, fake, 3)
    await fetch(db, "update payments set expires_at = now() - interval '1 minute'")
    watcher = PaymentWatcher(services, "owner-a")
    await watcher.iteration(None)  # type: ignore[arg-type]
    rows = await fetch(db, "select distinct status from payments")
    assert rows == [{"status": "expired"}]
    await watcher.close()


async def test_one_process_polls_at_a_time(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    services = wire(db, settings, alerts, fake)
    await open_invoices(db, fake, 10)
    first, second = PaymentWatcher(services, "owner-a"), PaymentWatcher(services, "owner-b")
    await first.iteration(None)  # type: ignore[arg-type]
    await second.iteration(None)  # type: ignore[arg-type]
    await first.iteration(None)  # type: ignore[arg-type]
    assert get_invoices_calls(fake) == 2  # the first twice, the second stood by
    await first.close()  # a clean stop hands the lease over at once
    await second.iteration(None)  # type: ignore[arg-type]
    assert get_invoices_calls(fake) == 3


async def test_a_provider_outage_fails_the_iteration_and_polling_resumes(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    services = wire(db, settings, alerts, fake)
    invoices = await open_invoices(db, fake, 5)
    fake.pay(invoices[0])
    fake.fail_next(502, body="<html>bad gateway</html>", times=3)
    recorder = Recorder()
    spec = fast(payment_watcher.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder) as supervisor:

        async def credited() -> bool:
            return await balance(db) == AMOUNT

        await wait_until(credited)
        assert supervisor.status_of(payment_watcher.NAME).restarts == 0
    failures = [f for f in recorder.failures if f[0] == payment_watcher.NAME]
    assert failures and {f[1] for f in failures} == {"dependency_error"}
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(failures)]
    assert all(gap >= 0.3 for gap in gaps)


async def test_a_database_outage_fails_the_iteration(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    flaky = FlakyDatabase(db)
    services = wire(flaky, settings, alerts, fake)
    flaky.down = True
    recorder = Recorder()
    spec = fast(payment_watcher.spec(services), interval=0.05, min_sleep=0.3)
    async with supervised(spec, observer=recorder) as supervisor:
        await trio.sleep(0.5)
        assert supervisor.status_of(payment_watcher.NAME).degraded_reason is not None
        flaky.down = False
        await trio.sleep(0.5)
        assert supervisor.status_of(payment_watcher.NAME).degraded_reason is None
    assert {f[1] for f in recorder.failures} == {"infra_error"}


async def test_an_amount_we_cannot_read_skips_that_invoice_not_the_poll(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    """Crypto Pay reporting ``"1e400"`` for one paid invoice: that invoice is logged and
    left open; the others are credited and the poll succeeds."""
    services = wire(db, settings, alerts, fake)
    invoices = await open_invoices(db, fake, 3)
    for invoice in invoices:
        fake.pay(invoice)
    fake.invoices[invoices[1]]["amount"] = "1e400"
    watcher = PaymentWatcher(services, "owner-a")
    with capture_logs() as logs:
        assert await watcher.iteration(None) is None  # type: ignore[arg-type]
    rows = await fetch(db, "select external_id, status from payments order by created_at desc")
    assert {r["external_id"]: r["status"] for r in rows} == {
        str(invoices[0]): "finalized",
        str(invoices[1]): "invoiced",
        str(invoices[2]): "finalized",
    }
    [skipped] = [e for e in logs if e["event"] == "paid invoice not understood"]
    assert (skipped["failure_type"], skipped["log_level"]) == ("domain_error", "warning")
    assert not alerts.alerts
    await watcher.close()


async def test_an_invoice_that_fails_to_credit_does_not_fail_the_others(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeCryptoBot
) -> None:
    """A bug crediting one invoice (here: its plan is gone from the config) is logged and
    alerted once per provider; the rest of the page is credited and the poll succeeds."""
    services = wire(db, settings, alerts, fake)
    invoices = await open_invoices(db, fake, 3)
    await fetch(
        db,
        "update payments set purpose = 'subscription', plan_id = 'gone' where external_id = $1",
        str(invoices[0]),
    )
    for invoice in invoices:
        fake.pay(invoice)
    watcher = PaymentWatcher(services, "owner-a")
    for _ in range(2):
        assert await watcher.iteration(None) is None  # type: ignore[arg-type]
    assert await balance(db) == 2 * AMOUNT
    assert alerts.seen() == ["payment_watch_failed:cryptobot"] * 2  # the pipeline throttles
    await watcher.close()
