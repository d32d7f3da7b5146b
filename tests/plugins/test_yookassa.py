"""The YooKassa provider against the fake YooKassa API on 127.0.0.1, and through the billing
core on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from plugins.yookassa import YooKassaProvider, vpnbot_payment_providers
from plugins.yookassa.refunds import PartialRefund, refund_part
from plugins.yookassa.settings import NOTIFICATION_NETWORKS, YooKassaReceipt
from runtime.billing import Billing, Checkout
from runtime.catalog import Catalog
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError, DomainError, FailureType, classify
from runtime.plugin_api import PaymentProvider
from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    ConfirmedPayment,
    InvoiceState,
    PaymentIntent,
    WebhookRejected,
)
from runtime.storage import Database, grants
from runtime.storage.payments import Verdict
from runtime.testing.contract import (
    DeliveryProof,
    PaymentProviderContract,
    ProviderUnderTest,
    Signature,
)
from runtime.testing.fakes.yookassa import IP_HEADER, FakeYooKassa, basic_auth

SHOP = "506070"
SECRET = "live_SecretKeyOfTheShop_4242"


def intent(amount_minor: int = 19900, currency: str = "RUB", **changes: Any) -> PaymentIntent:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "user_id": 4242,
        "amount_minor": amount_minor,
        "currency": currency,
        "purpose": "subscription",
        "title": "VPN, 30 days",
        "description": "30 days of VPN access",
        "plan_id": "month",
    }
    values.update(changes)
    return PaymentIntent(**values)


def make_provider(url: str, secret: str = SECRET, **options: Any) -> YooKassaProvider:
    options.setdefault("client_ip_header", IP_HEADER)
    options.setdefault("networks", NOTIFICATION_NETWORKS)
    return YooKassaProvider(SHOP, secret, base_url=f"{url}/v3/", **options)


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    peer = FakeYooKassa(SHOP, SECRET)
    async with peer.running():
        yield peer


@pytest.fixture
async def provider(fake: FakeYooKassa) -> AsyncIterator[YooKassaProvider]:
    subject = make_provider(fake.url)
    yield subject
    await subject.aclose()


async def received(
    provider: YooKassaProvider, headers: dict[str, str], body: bytes
) -> list[ConfirmedPayment]:
    """Through the provider's HTTP door as the core goes through it: authenticate, parse."""
    await provider.webhook.authenticate(headers, body)
    return list(await provider.webhook.parse(AuthenticatedDelivery(headers, body)))


def claimed_paid(payment_id: str) -> tuple[dict[str, str], bytes]:
    """A notification anyone could write: YooKassa's shape, saying ``payment_id`` succeeded."""
    body = {
        "type": "notification",
        "event": "payment.succeeded",
        "object": {
            "id": payment_id,
            "status": "succeeded",
            "paid": True,
            "amount": {"value": "199.00", "currency": "RUB"},
            "metadata": {"intent_id": payment_id},
        },
    }
    return {"content-type": "application/json"}, json.dumps(body).encode()


def malformed(delivery: tuple[dict[str, str], bytes]) -> list[tuple[dict[str, str], bytes]]:
    """YooKassa's own ways to be wrong: the other event for a paid payment, a notification
    without an object, an id that is a path, an event we do not act on."""
    headers, body = delivery
    notice = json.loads(body)
    canceled = {**notice, "event": "payment.canceled"}
    return [
        (headers, json.dumps(canceled).encode()),  # the API says succeeded
        (headers, json.dumps({"type": "notification", "event": "payment.succeeded"}).encode()),
        (headers, b'{"type":"notification","event":"payment.succeeded","object":{"id":"../x"}}'),
        (headers, json.dumps({**notice, "event": "refund.succeeded"}).encode()),
        (headers, json.dumps({**notice, "type": "payment"}).encode()),
    ]


class TestYooKassaContract(PaymentProviderContract):
    """Notifications proven by fetching the payment, from YooKassa's networks only."""

    client_ip_header: str | None = IP_HEADER

    @pytest.fixture
    async def subject(self) -> AsyncIterator[ProviderUnderTest]:
        fake = FakeYooKassa(SHOP, SECRET)
        async with fake.running() as url:
            provider = make_provider(url, client_ip_header=self.client_ip_header)

            async def paid(
                checkout: Checkout, *, amount_minor: int, currency: str
            ) -> tuple[dict[str, str], bytes]:
                payment_id = checkout.invoice.external_id or ""
                fake.pay(payment_id, value=f"{amount_minor / 100:.2f}", currency=currency)
                return fake.notification(payment_id)

            checked = self.client_ip_header is not None
            proof = DeliveryProof(
                Signature.NONE,
                fetched=True,
                source_networks=NOTIFICATION_NETWORKS if checked else (),
                source_header=IP_HEADER,
            )
            yield ProviderUnderTest(
                provider,
                fake,
                intent(),
                secrets=[SECRET],
                paid_delivery=paid,
                forge=malformed,
                proof=proof,
                notification=claimed_paid,
            )
            await provider.aclose()


class TestYooKassaContractWithoutNetworks(TestYooKassaContract):
    """The networks check is optional: without it, the fetch alone is the proof."""

    client_ip_header = None


# -- payments ---------------------------------------------------------------------------


async def test_create_sends_the_intent_as_key_and_metadata_and_the_amount_in_units(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    the_intent = intent(19950, "RUB")
    invoice = await provider.create_invoice(the_intent)

    sent = fake.calls("POST", "/v3/payments")[-1]
    assert sent.headers["authorization"] == basic_auth(SHOP, SECRET)
    assert sent.headers["idempotence-key"] == the_intent.id
    body = sent.json()
    assert body["amount"] == {"value": "199.50", "currency": "RUB"}
    assert body["capture"] is True
    assert body["confirmation"] == {"type": "redirect", "return_url": "https://t.me/"}
    assert body["metadata"]["intent_id"] == the_intent.id
    assert body["description"] == "30 days of VPN access"
    assert "receipt" not in body
    stored = fake.payments[invoice.external_id or ""]
    assert stored["status"] == "pending"
    assert invoice.url == stored["confirmation"]["confirmation_url"]
    assert invoice.send_in_chat is None


async def test_a_retried_create_returns_the_same_payment(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    the_intent = intent()
    first = await provider.create_invoice(the_intent)
    again = await provider.create_invoice(the_intent)
    assert first == again
    assert len(fake.payments) == 1
    assert len(fake.calls("POST", "/v3/payments")) == 2


async def test_one_key_for_another_request_is_a_permanent_failure(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    the_intent = intent()
    await provider.create_invoice(the_intent)
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent(29900, id=the_intent.id))
    assert classify(caught.value).transient is False
    assert "invalid_request" in str(caught.value)
    assert len(fake.payments) == 1


async def test_a_receipt_when_tax_settings_are_given(fake: FakeYooKassa) -> None:
    receipt = YooKassaReceipt(vat_code=1, tax_system_code=2, customer_email="shop@example.org")
    provider = make_provider(fake.url, receipt=receipt)
    await provider.create_invoice(intent(19900))
    sent = fake.calls("POST", "/v3/payments")[-1].json()["receipt"]
    assert sent["customer"] == {"email": "shop@example.org"}
    assert sent["tax_system_code"] == 2
    (item,) = sent["items"]
    assert item["amount"] == {"value": "199.00", "currency": "RUB"}
    assert (item["vat_code"], item["quantity"]) == (1, "1.00")
    await provider.aclose()


async def test_a_wrong_secret_is_a_permanent_failure_that_does_not_show_it(
    fake: FakeYooKassa,
) -> None:
    provider = make_provider(fake.url, secret="live_WrongSecretKey_000")
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert classify(caught.value).transient is False
    assert "live_WrongSecretKey_000" not in str(caught.value)
    assert fake.payments == {}
    await provider.aclose()


async def test_a_202_still_processing_is_transient(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    fake.fail_next(202, body={"type": "processing", "retry_after": 1800})
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert classify(caught.value).type is FailureType.DEPENDENCY
    assert classify(caught.value).transient is True


# -- notifications ------------------------------------------------------------------------


async def test_a_notification_credits_what_the_api_says_not_what_the_body_says(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    the_intent = intent(19900)
    invoice = await provider.create_invoice(the_intent)
    fake.pay(invoice.external_id or "")
    headers, body = fake.notification(
        invoice.external_id or "",
        changes={"amount": {"value": "1.00", "currency": "USD"}, "metadata": {}},
    )
    (payment,) = await received(provider, headers, body)
    assert (payment.amount_minor, payment.currency) == (19900, "RUB")
    assert (payment.intent_id, payment.external_id) == (the_intent.id, invoice.external_id)
    assert payment.paid_at is not None


async def test_a_notification_before_the_payment_is_paid_is_refused(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    invoice = await provider.create_invoice(intent())
    headers, body = fake.notification(invoice.external_id or "", changes={"status": "succeeded"})
    with pytest.raises(WebhookRejected) as caught:
        await received(provider, headers, body)
    assert caught.value.status == 401


async def test_out_of_order_a_cancel_after_success_is_refused_and_a_cancel_credits_nothing(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    paid = await provider.create_invoice(intent())
    fake.pay(paid.external_id or "")
    with pytest.raises(WebhookRejected):
        await received(provider, *fake.notification(paid.external_id or "", "payment.canceled"))
    canceled = await provider.create_invoice(intent())
    fake.cancel(canceled.external_id or "")
    assert (
        await received(provider, *fake.notification(canceled.external_id or "", "payment.canceled"))
        == []
    )


async def test_the_caller_address_is_checked_only_when_configured(fake: FakeYooKassa) -> None:
    open_door = make_provider(fake.url, client_ip_header=None)
    invoice = await open_door.create_invoice(intent())
    fake.pay(invoice.external_id or "")
    _, body = fake.notification(invoice.external_id or "")
    assert len(await received(open_door, {}, body)) == 1
    checked = make_provider(fake.url)
    for address in ("185.71.76.31", "77.75.156.11", "2a02:5180:0:1509::1", "10.0.0.1, 1.2.3.4"):
        headers = {IP_HEADER: address}
        if address.startswith("10."):
            with pytest.raises(WebhookRejected):
                await received(checked, headers, body)
        else:
            assert len(await received(checked, headers, body)) == 1
    with pytest.raises(WebhookRejected):
        await received(checked, {IP_HEADER: "185.71.76.32"}, body)  # just outside the /27
    await open_door.aclose()
    await checked.aclose()


async def test_the_api_being_down_refuses_so_yookassa_delivers_again(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    invoice = await provider.create_invoice(intent())
    fake.pay(invoice.external_id or "")
    headers, body = fake.notification(invoice.external_id or "")
    fake.fail_next(503, body={"type": "error", "code": "internal_server_error"})
    with pytest.raises(WebhookRejected):
        await received(provider, headers, body)
    assert len(await received(provider, headers, body)) == 1


# -- polling --------------------------------------------------------------------------------


async def test_fetch_status_reads_each_payment(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    pending, paid, canceled = [await provider.create_invoice(intent()) for _ in range(3)]
    fake.pay(paid.external_id or "")
    fake.cancel(canceled.external_id or "")
    ids = [i.external_id or "" for i in (pending, paid, canceled)]
    statuses = await provider.fetch_status(
        [*ids, ids[0], "2419a771-000f-5000-9000-1edaf29243f2", "../../v3/refunds"]
    )
    assert [(s.external_id, s.state) for s in statuses] == [
        (ids[0], InvoiceState.ACTIVE),
        (ids[1], InvoiceState.PAID),
        (ids[2], InvoiceState.EXPIRED),
    ]
    payment = statuses[1].payment
    assert payment is not None and payment.amount_minor == 19900
    assert len(fake.calls("GET", "/v3/payments/")) == 4  # the unknown one answered 404
    assert list(await provider.fetch_status([])) == []


# -- refunds --------------------------------------------------------------------------------


async def test_full_and_partial_refunds_never_more_than_paid(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    the_intent = intent(19900)
    invoice = await provider.create_invoice(the_intent)
    fake.pay(invoice.external_id or "")
    (payment,) = (await provider.fetch_status([invoice.external_id or ""]))[0:1]
    assert payment.payment is not None
    confirmed = payment.payment

    part = await provider.refund_amount(confirmed, user_id=1, amount_minor=5000, key="r1")
    assert part["amount"] == {"value": "50.00", "currency": "RUB"}
    again = await provider.refund_amount(confirmed, user_id=1, amount_minor=5000, key="r1")
    assert again["id"] == part["id"]  # a retry, not a second refund
    await provider.refund_amount(confirmed, user_id=1, amount_minor=5000, key="r2")
    assert fake.payments[invoice.external_id or ""]["refunded_amount"]["value"] == "100.00"
    with pytest.raises(DependencyError):
        await provider.refund(confirmed, user_id=1)  # only 99.00 left
    with pytest.raises(DomainError):
        await provider.refund_amount(confirmed, user_id=1, amount_minor=19901)
    assert len(fake.refunds) == 2


class _Alerts:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    def submit(self, alert: Any) -> None:
        self.alerts.append(alert)


def billing_for(db: Database, provider: YooKassaProvider) -> Billing:
    settings = Settings.model_validate(
        {
            "plans": {
                "month": {
                    "title": {"en": "Month"},
                    "duration_days": 30,
                    "backend": "main",
                    "prices": {"yookassa": {"RUB": 19900}},
                }
            }
        }
    )
    return Billing(
        db,
        Catalog.from_settings(settings),
        {"yookassa": provider},
        _Alerts(),
        balance_currency="RUB",
    )


async def paid(
    billing: Billing, provider: YooKassaProvider, fake: FakeYooKassa, checkout: Checkout
) -> None:
    fake.pay(checkout.invoice.external_id or "")
    (status,) = await provider.fetch_status([checkout.invoice.external_id or ""])
    assert status.payment is not None
    assert (await billing.confirm(status.payment)).verdict is Verdict.CREDITED


async def test_a_billing_refund_goes_through_the_api_once(db: Database, fake: FakeYooKassa) -> None:
    provider = make_provider(fake.url)
    billing = billing_for(db, provider)
    checkout = await billing.buy(1001, "month", "yookassa")
    await paid(billing, provider, fake, checkout)

    refunded = await billing.refund(checkout.payment.id)
    assert refunded is not None
    with pytest.raises(DomainError):
        await billing.refund(checkout.payment.id)
    (refund,) = fake.refunds.values()
    assert refund["amount"] == {"value": "199.00", "currency": "RUB"}
    await provider.aclose()


async def test_a_partial_refund_is_refunded_and_recorded_once_per_request(
    db: Database, fake: FakeYooKassa
) -> None:
    provider = make_provider(fake.url)
    billing = billing_for(db, provider)
    user = 1002
    await db.transaction(
        lambda conn: conn.execute("insert into users (telegram_id) values ($1)", user)
    )
    checkout = await billing.top_up(user, 19900, "yookassa")
    await paid(billing, provider, fake, checkout)
    actor = grants.admin_actor(1)

    async def balance() -> int:
        return int(
            await db.read(
                lambda conn: conn.fetchval(
                    "select balance_minor from users where telegram_id = $1", user
                )
            )
        )

    assert await balance() == 19900
    results: list[PartialRefund] = []

    async def one(key: str) -> None:
        results.append(
            await refund_part(db, provider, checkout.payment.id, 5000, key=key, actor=actor)
        )

    async with trio.open_nursery() as nursery:
        for _ in range(10):  # ten racing copies of one request
            nursery.start_soon(one, "update:77")
    assert [r.recorded for r in results].count(True) == 1
    assert len({r.refund_id for r in results}) == 1
    assert await balance() == 14900
    await one("update:78")  # another request: another part
    assert await balance() == 9900
    assert len(fake.refunds) == 2
    entries = await db.read(
        lambda conn: conn.fetch(
            "select action, balance_delta_minor from audit_log where action = $1 order by id",
            "payment.partial_refund",
        )
    )
    assert [e["balance_delta_minor"] for e in entries] == [-5000, -5000]
    with pytest.raises(DomainError):
        await refund_part(db, provider, checkout.payment.id, 19900, key="whole", actor=actor)
    await provider.aclose()


# -- the hook -------------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None) -> Settings:
    plugins: dict[str, Any] = {"settings": {} if table is None else {"yookassa": table}}
    return Settings.model_validate({"plugins": plugins})


def test_not_configured_offers_nothing() -> None:
    assert vpnbot_payment_providers(settings=settings_with(None)) == []


def test_the_hook_builds_the_provider() -> None:
    (provider,) = vpnbot_payment_providers(
        settings=settings_with({"shop_id": SHOP, "secret_key": SECRET})
    )
    assert isinstance(provider, YooKassaProvider) and isinstance(provider, PaymentProvider)
    assert provider.base_url == "https://api.yookassa.ru/v3/"
    assert SECRET not in repr(provider)


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"secret_key": SECRET}, "plugins.settings.yookassa.shop_id"),
        ({"shop_id": SHOP}, "plugins.settings.yookassa.secret_key"),
        ({"shop_id": "abc", "secret_key": SECRET}, "plugins.settings.yookassa.shop_id"),
        (
            {"shop_id": SHOP, "secret_key": SECRET, "notification_networks": ["nope"]},
            "plugins.settings.yookassa.notification_networks",
        ),
        (
            {"shop_id": SHOP, "secret_key": SECRET, "receipt": {"vat_code": 99}},
            "plugins.settings.yookassa.receipt.vat_code",
        ),
    ],
)
def test_bad_settings_are_config_errors(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings_with(table))
    assert path in [problem.path for problem in caught.value.problems]
    assert SECRET not in str(caught.value)
