"""The Heleket provider against the fake Heleket API on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plugins.heleket import HeleketProvider, vpnbot_payment_providers
from plugins.heleket.payments import BadPayment, exponent, status_of
from plugins.heleket.signing import php_json, sign_bytes
from runtime.app import check_configuration
from runtime.billing import Checkout
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError
from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    ConfirmedPayment,
    InvoiceState,
    PaymentIntent,
    RefundNotSupported,
    WebhookRejected,
)
from runtime.testing.contract import (
    DeliveryProof,
    PaymentProviderContract,
    ProviderUnderTest,
    Signature,
)
from runtime.testing.fakes.heleket import FakeHeleket, webhook_sign

MERCHANT = "c26b80a8-4a8e-4b42-8e5d-1d1d6b3c2a11"
API_KEY = "heleketSecretPaymentApiKey42xyz"


def intent(amount_minor: int = 500, currency: str = "USD", **changes: Any) -> PaymentIntent:
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


def make_provider(url: str, api_key: str = API_KEY, **options: Any) -> HeleketProvider:
    return HeleketProvider(MERCHANT, api_key, base_url=f"{url}/", **options)


@pytest.fixture
async def fake() -> AsyncIterator[FakeHeleket]:
    peer = FakeHeleket(MERCHANT, API_KEY)
    async with peer.running():
        yield peer


@pytest.fixture
async def provider(fake: FakeHeleket) -> AsyncIterator[HeleketProvider]:
    subject = make_provider(fake.url, callback_url="https://bot.example/webhooks/payments/heleket")
    yield subject
    await subject.aclose()


async def received(
    provider: HeleketProvider, headers: dict[str, str], body: bytes
) -> list[ConfirmedPayment]:
    await provider.webhook.authenticate(headers, body)
    return list(await provider.webhook.parse(AuthenticatedDelivery(headers, body)))


async def paid_invoice(fake: FakeHeleket, provider: HeleketProvider, **pay: Any) -> str:
    invoice = await provider.create_invoice(intent())
    assert invoice.external_id is not None
    fake.pay(invoice.external_id, **pay)
    return invoice.external_id


class TestHeleketContract(PaymentProviderContract):
    """The signature in the body is the proof; the address check is off (the default)."""

    allowed_ips: tuple[str, ...] = ()

    @pytest.fixture
    async def subject(self) -> AsyncIterator[ProviderUnderTest]:
        fake = FakeHeleket(MERCHANT, API_KEY)
        async with fake.running() as url:
            provider = make_provider(url, allowed_ips=self.allowed_ips)

            async def paid(
                checkout: Checkout, *, amount_minor: int, currency: str
            ) -> tuple[dict[str, str], bytes]:
                invoice_id = checkout.invoice.external_id or ""
                fake.pay(invoice_id, amount=f"{amount_minor / 100:.2f}", currency=currency)
                return fake.webhook_delivery(invoice_id)

            def signed_by_others(
                delivery: tuple[dict[str, str], bytes],
            ) -> list[tuple[dict[str, str], bytes]]:
                headers, body = delivery
                record = json.loads(body)
                other = {**record, "sign": webhook_sign(record, "someone-elses-key")}
                unescaped = {**record}
                unescaped["sign"] = sign_bytes(
                    json.dumps({k: v for k, v in record.items() if k != "sign"}).encode(), API_KEY
                )
                no_sign = {k: v for k, v in record.items() if k != "sign"}
                return [
                    (headers, php_json(other)),
                    (headers, php_json(unescaped)),
                    (headers, php_json(no_sign)),
                    (headers, php_json({**record, "amount": "9999.00"})),
                    (headers, b" " * (70 * 1024) + body),
                ]

            yield ProviderUnderTest(
                provider,
                fake,
                intent(),
                secrets=[API_KEY],
                paid_delivery=paid,
                forge=signed_by_others,
                proof=DeliveryProof(Signature.BODY, source_networks=self.allowed_ips),
            )
            await provider.aclose()


class TestHeleketContractWithAllowedIps(TestHeleketContract):
    """``allowed_ips`` on: a signed delivery from elsewhere is refused too."""

    allowed_ips = ("31.133.220.0/24",)


# -- invoices -------------------------------------------------------------------------


async def test_create_invoice_is_signed_and_carries_the_intent(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    the_intent = intent(19900, "RUB")
    invoice = await provider.create_invoice(the_intent)

    sent = fake.calls("POST", "/v1/payment")[-1]
    assert sent.headers["merchant"] == MERCHANT
    assert sent.headers["sign"] == sign_bytes(sent.body, API_KEY)
    params = sent.json()
    assert params == {
        "amount": "199",
        "currency": "RUB",
        "order_id": the_intent.id,
        "lifetime": 3600,
        "url_callback": "https://bot.example/webhooks/payments/heleket",
    }
    assert invoice.url == fake.invoices[invoice.external_id or ""]["url"]
    assert invoice.expires_at is not None


async def test_a_retried_create_gets_the_same_invoice(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    the_intent = intent()
    first = await provider.create_invoice(the_intent)
    again = await provider.create_invoice(the_intent)
    assert first.external_id == again.external_id and len(fake.invoices) == 1


async def test_coins_use_their_smallest_unit(fake: FakeHeleket, provider: HeleketProvider) -> None:
    await provider.create_invoice(intent(5_000_000, "USDT"))
    assert fake.calls("POST", "/v1/payment")[-1].json()["amount"] == "5"


async def test_a_wrong_key_is_a_permanent_failure_that_does_not_show_it(
    fake: FakeHeleket,
) -> None:
    wrong = "anotherMerchantsApiKey000"
    provider = make_provider(fake.url, api_key=wrong)
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert caught.value.transient is False
    assert wrong not in str(caught.value) and API_KEY not in str(caught.value)
    await provider.aclose()


async def test_refunds_are_recorded_by_hand(provider: HeleketProvider) -> None:
    with pytest.raises(RefundNotSupported):
        await provider.refund(ConfirmedPayment("heleket", "u", "i", 1, "USD"), user_id=1)


# -- webhooks -------------------------------------------------------------------------


def test_the_webhook_signature_is_over_php_json_with_escaped_slashes() -> None:
    record = {"uuid": "a", "url": "https://pay.heleket.com/pay/a", "note": "é"}
    assert php_json(record) == (
        b'{"uuid":"a","url":"https:\\/\\/pay.heleket.com\\/pay\\/a","note":"\\u00e9"}'
    )


async def test_a_signed_delivery_is_fetched_back_before_it_counts(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice_id = await paid_invoice(fake, provider)
    headers, body = fake.webhook_delivery(invoice_id)
    assert b"\\/" in body  # the url's slashes, escaped as PHP does

    before = len(fake.calls("POST", "/v1/payment/info"))
    (payment,) = await received(provider, headers, body)

    assert len(fake.calls("POST", "/v1/payment/info")) == before + 1
    invoice = fake.invoices[invoice_id]
    assert (payment.external_id, payment.intent_id) == (invoice_id, invoice["order_id"])
    assert (payment.amount_minor, payment.currency) == (500, "USD")


async def test_a_stale_delivery_reports_the_invoice_as_it_is_now(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice = await provider.create_invoice(intent())
    invoice_id = invoice.external_id or ""
    fake.set_status(invoice_id, "process")
    early = fake.webhook_delivery(invoice_id)
    fake.pay(invoice_id)
    assert len(await received(provider, *early)) == 1  # out of order: the API says paid

    paid_says = fake.webhook_delivery(invoice_id)
    fake.invoices[invoice_id].update(status="cancel", is_final=True)
    assert await received(provider, *paid_says) == []  # the API no longer says paid


async def test_a_signed_delivery_that_lies_about_the_amount_changes_nothing(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice_id = await paid_invoice(fake, provider)
    headers, body = fake.webhook_delivery(invoice_id, changes={"amount": "0.01"})
    (payment,) = await received(provider, headers, body)
    assert payment.amount_minor == 500  # what the API says, not the delivery


async def test_paid_over_credits_the_invoice_amount(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice_id = await paid_invoice(fake, provider, amount="7.50")
    assert fake.invoices[invoice_id]["status"] == "paid_over"
    (payment,) = await received(provider, *fake.webhook_delivery(invoice_id))
    assert payment.amount_minor == 500


async def test_wrong_amount_reports_what_was_paid(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice_id = await paid_invoice(fake, provider, amount="3.20")
    assert fake.invoices[invoice_id]["status"] == "wrong_amount"
    (payment,) = await received(provider, *fake.webhook_delivery(invoice_id))
    assert payment.amount_minor == 320  # less than the intent: the core refuses it


async def test_a_forged_or_oversized_delivery_is_refused_before_any_api_call(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    invoice_id = await paid_invoice(fake, provider)
    headers, body = fake.webhook_delivery(invoice_id)
    record = json.loads(body)
    before = len(fake.calls())
    for case in [
        php_json({**record, "sign": webhook_sign(record, "other-key")}),
        php_json({**record, "sign": None}),
        php_json({**record, "status": "paid_over"}),
        b"[]",
        b"{" * 100_000,
        json.dumps(record).encode(),  # the same data, other bytes
        body + b" " * (64 * 1024),
    ]:
        with pytest.raises(WebhookRejected) as caught:
            await provider.webhook.authenticate(headers, case)
        assert caught.value.status == 401
    assert len(fake.calls()) == before


async def test_only_allowed_addresses_may_deliver(fake: FakeHeleket) -> None:
    provider = make_provider(fake.url, allowed_ips=["31.133.220.0/24"])
    invoice_id = await paid_invoice(fake, provider)
    headers, body = fake.webhook_delivery(invoice_id)
    for address in (None, "10.0.0.1", "not-an-ip", "31.133.220.8, 10.0.0.1"):
        with pytest.raises(WebhookRejected):
            given = headers if address is None else {**headers, "x-real-ip": address}
            await provider.webhook.authenticate(given, body)
    assert len(await received(provider, {**headers, "x-real-ip": "31.133.220.8"}, body)) == 1
    await provider.aclose()


# -- status ---------------------------------------------------------------------------


async def test_fetch_status_maps_the_statuses(fake: FakeHeleket, provider: HeleketProvider) -> None:
    ids = []
    for status in ("paid", "cancel", "check", "refund_paid"):
        invoice = await provider.create_invoice(intent())
        ids.append(invoice.external_id or "")
        if status != "check":
            fake.pay(ids[-1], status=status)

    statuses = {s.external_id: s for s in await provider.fetch_status([*ids, "unknown"])}

    assert statuses[ids[0]].state is InvoiceState.PAID and statuses[ids[0]].payment is not None
    assert statuses[ids[1]].state is InvoiceState.EXPIRED
    assert statuses[ids[2]].state is InvoiceState.ACTIVE
    assert ids[3] not in statuses and "unknown" not in statuses


async def test_fetch_status_lets_a_transient_failure_through(
    fake: FakeHeleket, provider: HeleketProvider
) -> None:
    fake.fail_next(503, body={"state": 1})
    with pytest.raises(DependencyError) as caught:
        await provider.fetch_status(["x"])
    assert caught.value.transient


# -- the hook -------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None) -> Settings:
    return Settings.model_validate(
        {"plugins": {"settings": {} if table is None else {"heleket": table}}}
    )


def test_not_configured_offers_nothing() -> None:
    assert vpnbot_payment_providers(settings=settings_with(None)) == []


def test_the_hook_builds_a_provider() -> None:
    (provider,) = vpnbot_payment_providers(
        settings=settings_with({"merchant": MERCHANT, "api_key": API_KEY})
    )
    assert isinstance(provider, HeleketProvider)
    assert provider.base_url == "https://api.heleket.com/"
    assert API_KEY not in repr(provider)


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"api_key": API_KEY}, "plugins.settings.heleket.merchant"),
        ({"merchant": MERCHANT, "api_key": ""}, "plugins.settings.heleket.api_key"),
        ({"merchant": MERCHANT, "api_key": API_KEY, "lifetime_seconds": 60}, "lifetime_seconds"),
        ({"merchant": MERCHANT, "api_key": API_KEY, "allowed_ips": ["x"]}, "allowed_ips[0]"),
        ({"merchant": MERCHANT, "api_key": API_KEY, "callback_url": "ftp://a"}, "callback_url"),
    ],
)
def test_bad_settings_are_config_errors(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings_with(table))
    paths = [problem.path for problem in caught.value.problems]
    assert len(paths) == 1 and paths[0].endswith(path), paths
    assert API_KEY not in str(caught.value)


PART_PAID = {"uuid": "u", "order_id": "i", "amount": "5", "currency": "USD"}
PART_PAID["status"] = "wrong_amount"


@pytest.mark.parametrize(
    ("record", "credited"),
    [
        ({"payment_amount": "4.99", "payer_currency": "USD"}, 499),
        ({"payment_amount": "5.00", "payer_currency": "USD"}, 500),
        ({"payment_amount": "2.5", "payer_amount": "5.0", "payer_currency": "USDT"}, 250),
        ({"payment_amount": "9", "payer_amount": "5.0", "payer_currency": "USDT"}, 500),
    ],
)
def test_a_part_paid_invoice_reports_what_it_got_in_its_own_currency(
    record: dict[str, Any], credited: int
) -> None:
    info = {
        "uuid": "u",
        "order_id": "i",
        "amount": "5",
        "currency": "USD",
        "status": "wrong_amount",
    }
    status = status_of({**info, **record}, asset_decimals={})
    assert status is not None and status.payment is not None
    assert status.payment.amount_minor == credited


def test_a_part_paid_invoice_without_amounts_is_not_understood() -> None:
    info = {
        "uuid": "u",
        "order_id": "i",
        "amount": "5",
        "currency": "USD",
        "status": "wrong_amount",
    }
    with pytest.raises(BadPayment):
        status_of({**info, "payer_currency": "TRX", "payment_amount": "1e400x"}, asset_decimals={})


# -- prices checked at start ----------------------------------------------------------


def priced(currency: str, amount: int = 500, **heleket: Any) -> Settings:
    """A configuration with a Heleket plan priced in ``currency``, and a plan without one."""
    return Settings.model_validate(
        {
            "telegram": {"enabled": False},
            "http": {"enabled": False, "public": {"enabled": False}},
            "plugins": {
                "settings": {
                    "heleket": {"merchant": MERCHANT, "api_key": API_KEY, **heleket},
                    "marzban": {
                        "base_url": "https://panel.example.com",
                        "username": "bot",
                        "password": "pw-secret",
                    },
                }
            },
            "plans": {
                "month": {
                    "title": {"en": "Month"},
                    "duration_days": 30,
                    "backend": "marzban",
                    "prices": {"heleket": {currency: amount}},
                },
                "free": {
                    "title": {"en": "Free"},
                    "duration_days": 1,
                    "backend": "marzban",
                    "prices": {},
                },
            },
        }
    )


@pytest.mark.parametrize(
    ("currency", "heleket"),
    [
        ("USDT", {}),
        ("BTC", {}),
        ("USD", {}),
        ("RUB", {}),
        ("GBP", {"fiat_currencies": ["GBP"]}),
        ("FRESH", {"asset_decimals": {"FRESH": 8}}),
    ],
)
def test_a_plan_in_a_currency_heleket_takes_is_accepted(
    currency: str, heleket: dict[str, Any]
) -> None:
    (provider,) = vpnbot_payment_providers(settings=priced(currency, **heleket))
    assert isinstance(provider, HeleketProvider)
    check_configuration(priced(currency, **heleket), environ={})


@pytest.mark.parametrize(
    ("currency", "heleket"),
    [
        ("XYZ", {}),  # no coin of that name
        ("NOT", {}),  # Crypto Pay's coin, not Heleket's
        ("GBP", {}),  # a fiat currency not allowed
        ("USD", {"fiat_currencies": ["EUR"]}),
    ],
)
def test_a_plan_in_a_currency_heleket_does_not_take_is_refused_at_start(
    currency: str, heleket: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_configuration(priced(currency, **heleket), environ={})
    (problem,) = [p for p in caught.value.problems if "heleket" in p.path]
    assert problem.path == "plans.month.prices.heleket"
    assert f"plan 'month' is priced in {currency!r}" in problem.reason
    assert API_KEY not in str(caught.value)


def test_a_coin_declared_in_asset_decimals_is_invoiced_in_its_own_units() -> None:
    (provider,) = vpnbot_payment_providers(
        settings=priced("FRESH", 12_345_678, asset_decimals={"FRESH": 8})
    )
    assert isinstance(provider, HeleketProvider)
    assert exponent("FRESH", {"FRESH": 8}) == 8
    assert exponent("USDT", {}) == 6 and exponent("USD", {}) == 2


def test_fiat_currencies_must_be_iso_codes() -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=priced("USD", fiat_currencies=["usd", "DOLLAR"]))
    paths = [p.path for p in caught.value.problems]
    assert paths and all(".fiat_currencies" in path for path in paths), paths
