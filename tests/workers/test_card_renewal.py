"""Auto-renewal by a saved card through YooKassa (the fake API on loopback, a real
PostgreSQL): saved only with the user's consent, charged once per period also with
renewers racing, a declined card falling back to the balance and then to the reminder,
a removed card never charged again, a pending charge credited once when confirmed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import trio

from plugins.yookassa import YooKassaProvider
from plugins.yookassa.settings import NOTIFICATION_NETWORKS
from runtime.billing import Billing
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.plugin_api import Services
from runtime.plugin_api.payments import PaymentIntent
from runtime.storage import Database, card_renewals, job_kinds, renewals, saved_methods
from runtime.storage.card_renewals import Step
from runtime.testing.fakes.yookassa import IP_HEADER, FakeYooKassa
from runtime.workers.auto_renewal import AutoRenewal
from runtime.workers.payment_watcher import PaymentWatcher

from .conftest import SETTINGS_DATA, Alerts, fetch, jobs, make_services, make_settings

SHOP, SECRET = "445566", "test_CardRenewalSecret_0001"
CARD_PRICE = 29900  # the month plan through YooKassa
BALANCE_PRICE = 19900  # the month plan from the balance (RUB, the "card" price)
USER = 7301


class _Ctx:
    def __init__(self) -> None:
        self.stop_requested = trio.Event()


CTX: Any = _Ctx()


@pytest.fixture
def settings() -> Settings:
    month = dict(SETTINGS_DATA["plans"]["month"])
    month["prices"] = {**month["prices"], "yookassa": {"RUB": CARD_PRICE}}
    return make_settings(plans={**SETTINGS_DATA["plans"], "month": month})


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    peer = FakeYooKassa(SHOP, SECRET)
    async with peer.running():
        yield peer


@pytest.fixture
async def services(
    db: Database, settings: Settings, alerts: Alerts, fake: FakeYooKassa
) -> AsyncIterator[Services]:
    provider = YooKassaProvider(
        SHOP,
        SECRET,
        base_url=f"{fake.url}/v3/",
        client_ip_header=IP_HEADER,
        networks=NOTIFICATION_NETWORKS,
        saved_methods=True,
    )
    services = make_services(db, settings, alerts)
    billing = Billing(
        db, Catalog.from_settings(settings), {"yookassa": provider}, alerts, balance_currency="RUB"
    )
    services.provide_domain(billing, None)
    yield services
    await provider.aclose()


async def buy_and_pay(services: Services, fake: FakeYooKassa, *, consent: bool, **pay: Any) -> str:
    """A first purchase through YooKassa, paid and notified; returns the payment's id."""
    checkout = await services.billing.buy(USER, "month", "yookassa", save_method=consent)
    payment_id = checkout.invoice.external_id or ""
    fake.pay(payment_id, **pay)
    await services.billing.webhook("yookassa", *fake.notification(payment_id))
    return payment_id


async def with_card(services: Services, fake: FakeYooKassa, *, balance: int = 0) -> int:
    """A user who bought with a saved card, whose subscription is due for renewal now."""
    await buy_and_pay(services, fake, consent=True)
    rows = await fetch(
        services.db,
        "update subscriptions set expires_at = now() + interval '10 hours'"
        " where user_id = $1 returning id",
        USER,
    )
    await fetch(
        services.db, "update users set balance_minor = $2 where telegram_id = $1", USER, balance
    )
    return int(rows[0]["id"])


def charges(fake: FakeYooKassa) -> list[dict[str, Any]]:
    """The payments made by charging a saved method, at the peer."""
    return [p for p in fake.payments.values() if "_method_id" in p]


async def state(db: Database, sid: int) -> dict[str, Any]:
    rows = await fetch(
        db,
        "select s.expires_at, u.balance_minor, u.auto_renew from subscriptions s"
        " join users u on u.telegram_id = s.user_id where s.id = $1",
        sid,
    )
    return rows[0]


async def renewal_payments(db: Database) -> list[dict[str, Any]]:
    return await fetch(
        db,
        "select provider, status, amount_minor from payments where purpose = 'renewal'"
        " order by created_at",
    )


# -- consent ---------------------------------------------------------------------------


async def test_consent_saves_the_card_and_turns_auto_renew_on(
    services: Services, fake: FakeYooKassa
) -> None:
    payment_id = await buy_and_pay(services, fake, consent=True, last4="1234")
    assert fake.payments[payment_id]["_save"] is True
    method = await saved_methods.in_use(services.db, USER)
    assert method is not None
    assert method.provider == "yookassa"
    assert method.title == "Bank card *1234"
    assert method.method_ref == fake.payments[payment_id]["payment_method"]["id"]
    assert method.method_ref in fake.methods
    rows = await fetch(services.db, "select auto_renew from users where telegram_id = $1", USER)
    assert rows[0]["auto_renew"] is True
    # the same notification again saves nothing more
    await services.billing.webhook("yookassa", *fake.notification(payment_id))
    assert len(await fetch(services.db, "select id from saved_payment_methods")) == 1


async def test_without_consent_nothing_is_saved(services: Services, fake: FakeYooKassa) -> None:
    payment_id = await buy_and_pay(services, fake, consent=False)
    assert "_save" not in fake.payments[payment_id]
    assert fake.payments[payment_id]["payment_method"]["saved"] is False
    assert await saved_methods.in_use(services.db, USER) is None
    assert not fake.methods


async def test_a_method_that_cannot_be_saved_is_paid_but_not_saved(
    services: Services, fake: FakeYooKassa
) -> None:
    await buy_and_pay(services, fake, consent=True, method_type="mobile_balance")
    assert await saved_methods.in_use(services.db, USER) is None
    rows = await fetch(services.db, "select status from payments where user_id = $1", USER)
    assert [r["status"] for r in rows] == ["finalized"]


async def test_a_saved_method_reported_for_an_intent_without_consent_is_not_kept(
    services: Services, fake: FakeYooKassa
) -> None:
    """A provider (or a forged payment object) saying a method was saved is not consent."""
    checkout = await services.billing.buy(USER, "month", "yookassa")
    payment_id = checkout.invoice.external_id or ""
    fake.payments[payment_id]["_save"] = True  # the peer saves it anyway
    fake.pay(payment_id)
    assert fake.payments[payment_id]["payment_method"]["saved"] is True
    await services.billing.webhook("yookassa", *fake.notification(payment_id))
    assert await saved_methods.in_use(services.db, USER) is None


# -- renewal ---------------------------------------------------------------------------


async def test_renewal_charges_the_card_once_per_period(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    before = await state(db, sid)
    worker = AutoRenewal(services)
    await worker.iteration(CTX)
    await worker.iteration(CTX)
    after = await state(db, sid)
    assert after["expires_at"] - before["expires_at"] == timedelta(days=30)
    assert after["balance_minor"] == 50_000  # the balance is not touched
    [charge] = charges(fake)
    assert charge["status"] == "succeeded"
    assert charge["amount"] == {"value": "299.00", "currency": "RUB"}
    assert await renewal_payments(db) == [
        {"provider": "yookassa", "status": "finalized", "amount_minor": CARD_PRICE}
    ]
    rows = await fetch(db, "select status from renewal_charges")
    assert rows == [{"status": "succeeded"}]


async def test_two_renewers_racing_charge_each_period_once(
    db: Database, services: Services, fake: FakeYooKassa, settings: Settings, alerts: Alerts
) -> None:
    sid = await with_card(services, fake)
    before = await state(db, sid)
    # a second Services on the same database: the renewers share nothing but PostgreSQL
    other = make_services(db, settings, alerts)
    other.provide_domain(services.billing, None)
    workers = [AutoRenewal(services), AutoRenewal(other)]
    async with trio.open_nursery() as nursery:
        for worker in workers * 3:
            nursery.start_soon(worker.iteration, CTX)
    assert len(charges(fake)) == 1
    after = await state(db, sid)
    assert after["expires_at"] - before["expires_at"] == timedelta(days=30)
    assert len(await renewal_payments(db)) == 1


async def test_a_claimed_charge_is_retried_with_the_same_intent_and_key(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    """A process that died between storing the charge and hearing the provider's answer:
    the next one charges again with the same intent, and YooKassa returns the first
    payment (the key is the period's), so one payment exists."""
    await with_card(services, fake)
    [candidate] = await renewals.due(db, lead=timedelta(hours=24))
    options: dict[str, Any] = {
        "provider": "yookassa",
        "amount_minor": CARD_PRICE,
        "currency": "RUB",
        "ttl_minutes": 60,
    }
    first = await card_renewals.begin(db, candidate, **options, claim=timedelta(0))
    held = await card_renewals.begin(db, candidate, **options)
    assert first.step is Step.CHARGE and held.step is Step.CHARGE and held.retry
    assert first.intent is not None and held.intent is not None
    assert held.intent.id == first.intent.id
    provider = services.billing.provider("yookassa")
    assert isinstance(provider, YooKassaProvider)
    assert first.method is not None
    key = renewals.renewal_charge_id(candidate.subscription_id, candidate.expires_at)
    request = PaymentIntent(
        id=first.intent.id,
        user_id=USER,
        amount_minor=CARD_PRICE,
        currency="RUB",
        purpose="renewal",
        title="1 month",
        description="1 month",
        plan_id="month",
    )
    one = await provider.charge_saved(first.method.method_ref, request, key=key)
    two = await provider.charge_saved(first.method.method_ref, request, key=key)
    assert one.external_id == two.external_id
    assert len(charges(fake)) == 1
    # while it is held, nobody else charges
    third = await card_renewals.begin(db, candidate, **options)
    assert third.step is Step.WAIT


async def test_a_declined_card_falls_back_to_the_balance_once_per_period(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    before = await state(db, sid)
    fake.script_charge("canceled", reason="insufficient_funds")
    worker = AutoRenewal(services)
    await worker.iteration(CTX)
    await worker.iteration(CTX)
    assert len(charges(fake)) == 1
    after = await state(db, sid)
    assert after["expires_at"] - before["expires_at"] == timedelta(days=30)
    assert after["balance_minor"] == 50_000 - BALANCE_PRICE
    assert await renewal_payments(db) == [
        {"provider": "yookassa", "status": "failed", "amount_minor": CARD_PRICE},
        {"provider": "balance", "status": "finalized", "amount_minor": BALANCE_PRICE},
    ]
    rows = await fetch(db, "select status, reason from renewal_charges")
    assert rows == [{"status": "failed", "reason": "insufficient_funds"}]
    assert await saved_methods.in_use(db, USER) is not None  # declined once: kept


async def test_a_declined_card_and_a_low_balance_remind_once(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=100)
    before = await state(db, sid)
    fake.script_charge("canceled", reason="insufficient_funds")
    worker = AutoRenewal(services)
    for _ in range(3):
        await worker.iteration(CTX)
    assert len(charges(fake)) == 1
    assert (await state(db, sid))["expires_at"] == before["expires_at"]
    reminders = [
        j
        for j in await jobs(db, job_kinds.NOTIFY)
        if j["payload"]["template"] == "renewal_insufficient"
    ]
    assert len(reminders) == 1


async def test_a_revoked_permission_forgets_the_card(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    method = await saved_methods.in_use(db, USER)
    assert method is not None
    fake.revoke_method(method.method_ref)
    await AutoRenewal(services).iteration(CTX)
    [charge] = charges(fake)
    assert charge["cancellation_details"] == {"party": "yoo_money", "reason": "permission_revoked"}
    assert await saved_methods.in_use(db, USER) is None
    rows = await fetch(db, "select revoked_reason from saved_payment_methods")
    assert rows == [{"revoked_reason": "provider: permission_revoked"}]
    assert (await state(db, sid))["balance_minor"] == 50_000 - BALANCE_PRICE


async def test_a_removed_card_is_never_charged(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    method = await saved_methods.in_use(db, USER)
    assert method is not None
    assert await saved_methods.revoke(db, USER, method.id, reason="removed by the user")
    assert not await saved_methods.revoke(db, USER, method.id, reason="again")
    await AutoRenewal(services).iteration(CTX)
    assert charges(fake) == []
    assert (await state(db, sid))["balance_minor"] == 50_000 - BALANCE_PRICE


async def test_another_users_card_cannot_be_removed(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    await with_card(services, fake)
    method = await saved_methods.in_use(db, USER)
    assert method is not None
    assert not await saved_methods.revoke(db, USER + 1, method.id, reason="not theirs")
    assert await saved_methods.in_use(db, USER) is not None


async def test_a_pending_charge_is_credited_once_when_confirmed(
    db: Database, services: Services, fake: FakeYooKassa, alerts: Alerts
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    before = await state(db, sid)
    fake.script_charge("pending")
    worker = AutoRenewal(services)
    await worker.iteration(CTX)
    await worker.iteration(CTX)  # waits: neither a second charge nor the balance
    [charge] = charges(fake)
    assert (await state(db, sid)) == before
    fake.pay(charge["id"])
    watcher = PaymentWatcher(services, "owner-a")
    await watcher.iteration(None)  # type: ignore[arg-type]
    await services.billing.webhook("yookassa", *fake.notification(charge["id"]))
    await watcher.iteration(None)  # type: ignore[arg-type]
    after = await state(db, sid)
    assert after["expires_at"] - before["expires_at"] == timedelta(days=30)
    assert after["balance_minor"] == 50_000
    assert await renewal_payments(db) == [
        {"provider": "yookassa", "status": "finalized", "amount_minor": CARD_PRICE}
    ]
    await worker.iteration(CTX)  # the next period is not due yet
    assert len(charges(fake)) == 1
    assert not alerts.alerts
    await watcher.close()


async def test_a_pending_charge_never_paid_falls_back_to_the_balance(
    db: Database, services: Services, fake: FakeYooKassa
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    fake.script_charge("pending")
    worker = AutoRenewal(services)
    await worker.iteration(CTX)
    [charge] = charges(fake)
    fake.cancel(charge["id"], reason="general_decline")
    await fetch(db, "update payments set expires_at = now() - interval '1 second'")
    watcher = PaymentWatcher(services, "owner-a")
    await watcher.iteration(None)  # type: ignore[arg-type]
    await worker.iteration(CTX)
    assert (await state(db, sid))["balance_minor"] == 50_000 - BALANCE_PRICE
    assert len(charges(fake)) == 1
    await watcher.close()


async def test_a_tampered_amount_is_refused_alerted_and_never_charged_again_from_the_balance(
    db: Database, services: Services, fake: FakeYooKassa, alerts: Alerts
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    before = await state(db, sid)
    fake.script_charge("succeeded", value="1.00")
    await AutoRenewal(services).iteration(CTX)
    after = await state(db, sid)
    assert after["expires_at"] == before["expires_at"]
    assert after["balance_minor"] == 50_000
    rows = await fetch(db, "select status, reason from renewal_charges")
    assert rows == [{"status": "refused", "reason": "mismatch"}]
    assert [a.key.split(":")[0] for a in alerts.alerts] == ["payment_mismatch"]
    await AutoRenewal(services).iteration(CTX)
    assert len(charges(fake)) == 1


async def test_a_provider_gone_from_the_configuration_falls_back_to_the_balance(
    db: Database, services: Services, fake: FakeYooKassa, settings: Settings, alerts: Alerts
) -> None:
    sid = await with_card(services, fake, balance=50_000)
    bare = make_services(db, settings, alerts)
    bare.provide_domain(
        Billing(db, Catalog.from_settings(settings), {}, alerts, balance_currency="RUB"), None
    )
    await AutoRenewal(bare).iteration(CTX)
    assert charges(fake) == []
    assert (await state(db, sid))["balance_minor"] == 50_000 - BALANCE_PRICE
