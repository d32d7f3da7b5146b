"""The CryptoBot provider against the fake Crypto Pay API on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from plugins.cryptobot import CryptoBotProvider, vpnbot_payment_providers
from plugins.cryptobot.amounts import MAX_MINOR, to_decimal_string, to_minor
from plugins.cryptobot.client import CryptoPayClient
from runtime.billing import Checkout
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError, FailureType, classify
from runtime.plugin_api import PaymentProvider
from runtime.plugin_api.payments import (
    AuthenticatedDelivery,
    ConfirmedPayment,
    InvoiceState,
    PaymentIntent,
    RefundNotSupported,
    WebhookRejected,
)
from runtime.testing.contract import PaymentProviderContract, ProviderUnderTest
from runtime.testing.fakes.cryptobot import SIGNATURE_HEADER, FakeCryptoBot, sign

TOKEN = "98765:AAHcryptoPaySecretAppToken42"


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


def make_provider(url: str, token: str = TOKEN, **options: Any) -> CryptoBotProvider:
    return CryptoBotProvider(token, base_url=f"{url}/api/", **options)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCryptoBot]:
    peer = FakeCryptoBot(TOKEN)
    async with peer.running():
        yield peer


@pytest.fixture
async def provider(fake: FakeCryptoBot) -> AsyncIterator[CryptoBotProvider]:
    subject = make_provider(fake.url, accepted_assets=["USDT", "TON"])
    yield subject
    await subject.aclose()


async def paid_delivery(
    fake: FakeCryptoBot, provider: CryptoBotProvider, the_intent: PaymentIntent
) -> tuple[dict[str, str], bytes]:
    invoice = await provider.create_invoice(the_intent)
    assert invoice.external_id is not None
    fake.pay(invoice.external_id)
    return fake.webhook_delivery(invoice.external_id)


async def received(
    provider: CryptoBotProvider, headers: dict[str, str], body: bytes
) -> list[ConfirmedPayment]:
    """Through the provider's HTTP door as the core goes through it: authenticate, parse."""
    await provider.webhook.authenticate(headers, body)
    return list(await provider.webhook.parse(AuthenticatedDelivery(headers, body)))


class TestCryptoBotContract(PaymentProviderContract):
    @pytest.fixture
    async def subject(self) -> AsyncIterator[ProviderUnderTest]:
        fake = FakeCryptoBot(TOKEN)
        async with fake.running() as url:
            provider = make_provider(url)

            async def paid(
                checkout: Checkout, *, amount_minor: int, currency: str
            ) -> tuple[dict[str, str], bytes]:
                invoice_id = checkout.invoice.external_id or ""
                fake.pay(invoice_id)
                return fake.webhook_delivery(
                    invoice_id,
                    changes={
                        "fiat": currency,
                        "amount": to_decimal_string(amount_minor, 2, keep_zeros=True),
                    },
                )

            def signed_by_others(
                delivery: tuple[dict[str, str], bytes],
            ) -> list[tuple[dict[str, str], bytes]]:
                _, body = delivery
                return [
                    ({SIGNATURE_HEADER: sign("1:someone-elses-token", body)}, body),
                    ({SIGNATURE_HEADER: sign(TOKEN, body)}, body + b"\n"),
                    ({SIGNATURE_HEADER: hashlib.sha256(body).hexdigest()}, body),
                ]

            yield ProviderUnderTest(
                provider,
                fake,
                intent(),
                secrets=[TOKEN],
                paid_delivery=paid,
                forge=signed_by_others,
            )
            await provider.aclose()


# -- invoices -------------------------------------------------------------------------


async def test_create_invoice_sends_the_intent_and_a_fiat_amount(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    the_intent = intent(19900, "RUB")
    invoice = await provider.create_invoice(the_intent)

    sent = fake.calls("POST", "/api/createInvoice")[-1]
    assert sent.headers["crypto-pay-api-token"] == TOKEN
    params = sent.json()
    assert params["currency_type"] == "fiat"
    assert params["fiat"] == "RUB"
    assert params["amount"] == "199.00"
    assert params["payload"] == the_intent.id
    assert params["accepted_assets"] == "USDT,TON"
    assert params["expires_in"] == 3600
    stored = fake.invoices[int(invoice.external_id or 0)]
    assert invoice.url == stored["bot_invoice_url"]
    assert invoice.url.startswith("https://t.me/CryptoBot?start=")
    assert invoice.expires_at is not None
    assert invoice.send_in_chat is None


async def test_crypto_invoices_use_the_asset_and_its_decimals(fake: FakeCryptoBot) -> None:
    provider = make_provider(fake.url, currency_type="crypto")
    await provider.create_invoice(intent(5_000_000, "USDT"))
    await provider.create_invoice(intent(1_500_000_000, "TON"))
    sent = [call.json() for call in fake.calls("POST", "/api/createInvoice")]
    assert [(p["asset"], p["amount"]) for p in sent] == [("USDT", "5"), ("TON", "1.5")]
    assert all("fiat" not in p and p["currency_type"] == "crypto" for p in sent)
    await provider.aclose()


def test_amount_exponent_rule() -> None:
    assert to_decimal_string(19900, 2, keep_zeros=True) == "199.00"
    assert to_decimal_string(5, 2, keep_zeros=True) == "0.05"
    assert to_decimal_string(500, 0, keep_zeros=True) == "500"
    assert to_decimal_string(2_000_000_000_000_000, 18, keep_zeros=False) == "0.002"
    assert to_decimal_string(10_000_000, 6, keep_zeros=False) == "10"
    assert to_minor("199.00", 2) == 19900
    assert to_minor("199", 2) == 19900
    assert to_minor(1.5, 9) == 1_500_000_000
    assert to_minor(str(MAX_MINOR), 0) == MAX_MINOR
    for bad in ("abc", "-1", None, True, "NaN", "1e400", "1e-400e5", "9" * 101, MAX_MINOR + 1):
        with pytest.raises(ValueError):
            to_minor(bad, 2)


async def test_unknown_asset_is_a_domain_error_without_a_call(fake: FakeCryptoBot) -> None:
    provider = make_provider(fake.url, currency_type="crypto")
    with pytest.raises(Exception) as caught:
        await provider.create_invoice(intent(100, "XYZ"))
    assert classify(caught.value).type is FailureType.DOMAIN
    assert fake.calls("POST", "/api/createInvoice") == []
    await provider.aclose()


# -- webhooks -------------------------------------------------------------------------


async def test_a_signed_invoice_paid_delivery_is_one_payment(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    the_intent = intent(19900, "RUB")
    headers, body = await paid_delivery(fake, provider, the_intent)

    payments = await received(provider, headers, body)

    assert len(payments) == 1
    payment = payments[0]
    assert isinstance(payment, ConfirmedPayment)
    invoice = fake.invoice_for(the_intent.id)
    assert payment.provider == "cryptobot"
    assert payment.external_id == str(invoice["invoice_id"])
    assert payment.intent_id == the_intent.id
    assert (payment.amount_minor, payment.currency) == (19900, "RUB")
    assert payment.paid_at is not None
    assert payment.raw["paid_asset"] == "USDT"


async def test_header_names_are_case_insensitive(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    headers, body = await paid_delivery(fake, provider, intent())
    upper = {"Crypto-Pay-Api-Signature": headers[SIGNATURE_HEADER].upper()}
    assert len(await received(provider, upper, body)) == 1


async def test_forged_missing_and_reserialised_deliveries_are_rejected_with_401(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    headers, body = await paid_delivery(fake, provider, intent())
    reserialised = json.dumps(json.loads(body)).encode()  # same data, other bytes
    assert reserialised != body
    cases = [
        ({SIGNATURE_HEADER: sign("1:another-apps-token", body)}, body),
        ({}, body),
        ({SIGNATURE_HEADER: ""}, body),
        (headers, reserialised),
        ({SIGNATURE_HEADER: "zz\u00e9"}, body),
    ]
    for case_headers, case_body in cases:
        with pytest.raises(WebhookRejected) as caught:
            await received(provider, case_headers, case_body)
        assert caught.value.status == 401


async def test_the_signature_is_checked_before_the_body_is_parsed(
    provider: CryptoBotProvider,
) -> None:
    with pytest.raises(WebhookRejected) as caught:
        await received(provider, {}, b"{broken json")
    assert caught.value.status == 401


async def test_signed_garbage_is_rejected_with_400(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    body = b"[1, 2]"
    with pytest.raises(WebhookRejected) as caught:
        await received(provider, {SIGNATURE_HEADER: sign(TOKEN, body)}, body)
    assert caught.value.status == 400
    unreadable = [
        {},
        {"invoice_id": 1, "payload": "i", "currency_type": "fiat", "amount": "1"},
        {"invoice_id": 1, "payload": "i", "currency_type": "fiat", "fiat": "RUB", "amount": "x"},
        {"invoice_id": 1, "payload": "i", "currency_type": "crypto", "asset": "ZZZ", "amount": "1"},
    ]
    for invoice in unreadable:
        headers, body = fake.update_delivery({"update_type": "invoice_paid", "payload": invoice})
        with pytest.raises(WebhookRejected) as caught:
            await received(provider, headers, body)
        assert caught.value.status == 400


@pytest.mark.parametrize("amount", ["1e400", "1e-400e5", "-5", "0", "9" * 101, "Infinity"])
async def test_an_unreadable_amount_from_the_authenticated_peer_is_a_domain_error(
    fake: FakeCryptoBot, provider: CryptoBotProvider, amount: str
) -> None:
    invoice = await provider.create_invoice(intent())
    fake.pay(invoice.external_id or "")
    headers, body = fake.webhook_delivery(invoice.external_id or "", changes={"amount": amount})
    with pytest.raises(WebhookRejected) as caught:
        await received(provider, headers, body)
    assert caught.value.status == 400
    assert classify(caught.value).type is FailureType.DOMAIN


async def test_one_unreadable_invoice_does_not_hide_the_others_from_polling(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    good, bad = intent(), intent()
    ids = []
    for the_intent in (good, bad):
        invoice = await provider.create_invoice(the_intent)
        fake.pay(invoice.external_id or "")
        ids.append(invoice.external_id or "")
    fake.invoices[int(ids[1])]["amount"] = "1e400"

    with capture_logs() as logs:
        statuses = await provider.fetch_status(ids)

    (status,) = statuses
    assert status.payment is not None and status.payment.intent_id == good.id
    (skipped,) = [e for e in logs if e["event"] == "paid invoice not understood"]
    assert skipped["failure_type"] == "domain_error" and skipped["log_level"] == "warning"


async def test_other_update_types_are_ignored(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    headers, body = fake.update_delivery(
        {"update_id": 7, "update_type": "check_activated", "payload": {"check_id": 1}}
    )
    assert list(await received(provider, headers, body)) == []


async def test_an_invoice_without_our_payload_is_skipped(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    invoice = fake.add_invoice(currency_type="fiat", fiat="USD", amount="3")
    fake.pay(invoice["invoice_id"])
    headers, body = fake.webhook_delivery(invoice["invoice_id"])
    assert list(await received(provider, headers, body)) == []


async def test_repeated_update_ids_do_not_merge_payments(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    first = await paid_delivery(fake, provider, intent())
    second_intent = intent(9900)
    invoice = await provider.create_invoice(second_intent)
    fake.pay(invoice.external_id or "")
    update_id = json.loads(first[1])["update_id"]
    second = fake.webhook_delivery(invoice.external_id or "", update_id=update_id)

    payments = [*await received(provider, *first), *await received(provider, *second)]
    assert len({p.external_id for p in payments}) == 2
    assert payments[1].intent_id == second_intent.id
    assert payments[1].amount_minor == 9900
    # the same invoice delivered again is the same payment: the core dedupes on it
    again = await received(provider, *fake.webhook_delivery(invoice.external_id or ""))
    assert again[0].external_id == payments[1].external_id


# -- status ---------------------------------------------------------------------------


async def test_fetch_status_reads_1000_invoices_per_call(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    ids = [
        str(
            fake.add_invoice(currency_type="fiat", fiat="RUB", amount="10", payload=f"i{n}")[
                "invoice_id"
            ]
        )
        for n in range(2500)
    ]
    fake.pay(ids[0])
    fake.pay(ids[2499])
    fake.expire(ids[1500])

    statuses = await provider.fetch_status(ids)

    calls = fake.calls("POST", "/api/getInvoices")
    assert len(calls) == 3
    sizes = [len(call.json()["invoice_ids"].split(",")) for call in calls]
    assert sizes == [1000, 1000, 500]
    assert all(call.json()["count"] == 1000 for call in calls)
    by_id = {s.external_id: s for s in statuses}
    assert len(by_id) == 2500
    assert by_id[ids[0]].state is InvoiceState.PAID
    payment = by_id[ids[0]].payment
    assert payment is not None and payment.intent_id == "i0" and payment.amount_minor == 1000
    assert by_id[ids[2499]].state is InvoiceState.PAID
    assert by_id[ids[1500]].state is InvoiceState.EXPIRED
    assert by_id[ids[1]].state is InvoiceState.ACTIVE and by_id[ids[1]].payment is None


async def test_fetch_status_skips_ids_that_are_not_invoice_ids(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    assert list(await provider.fetch_status(["not-a-number", ""])) == []
    assert fake.calls("POST", "/api/getInvoices") == []
    assert list(await provider.fetch_status(["999999"])) == []  # unknown: left out
    assert len(fake.calls("POST", "/api/getInvoices")) == 1


async def test_refunds_are_not_supported(provider: CryptoBotProvider) -> None:
    payment = ConfirmedPayment("cryptobot", "1", "intent", 100, "RUB")
    with pytest.raises(RefundNotSupported):
        await provider.refund(payment, user_id=1)


# -- failures -------------------------------------------------------------------------


async def test_a_wrong_token_is_a_permanent_failure_that_does_not_show_it(
    fake: FakeCryptoBot,
) -> None:
    wrong = "11111:AAHwrongCryptoPayTokenValue"
    provider = make_provider(fake.url, token=wrong)
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert caught.value.transient is False
    assert "UNAUTHORIZED" in str(caught.value)
    assert wrong not in str(caught.value)
    await provider.aclose()


@pytest.mark.parametrize(
    ("status", "code", "transient"), [(200, 400, False), (200, 500, True), (400, 400, False)]
)
async def test_error_envelopes_are_classified(
    fake: FakeCryptoBot, provider: CryptoBotProvider, status: int, code: int, transient: bool
) -> None:
    fake.fail_next(status, body={"ok": False, "error": {"code": code, "name": "AMOUNT_TOO_SMALL"}})
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert caught.value.transient is transient
    assert "AMOUNT_TOO_SMALL" in str(caught.value)


async def test_a_429_carries_retry_after(fake: FakeCryptoBot, provider: CryptoBotProvider) -> None:
    fake.rate_limit_next(11)
    with pytest.raises(DependencyError) as caught:
        await provider.fetch_status(["1000"])
    assert caught.value.transient and caught.value.retry_after == 11


async def test_a_non_json_2xx_is_transient(
    fake: FakeCryptoBot, provider: CryptoBotProvider
) -> None:
    fake.fail_next(200, body="<html>maintenance</html>")
    with pytest.raises(DependencyError) as caught:
        await provider.create_invoice(intent())
    assert caught.value.transient


async def test_the_token_never_reaches_errors_or_logs(fake: FakeCryptoBot) -> None:
    provider = make_provider(fake.url)
    with capture_logs() as logs:
        headers, body = await paid_delivery(fake, provider, intent())
        await received(provider, headers, body)
        await provider.fetch_status(["x", "1000"])
        errors: list[BaseException] = []
        for status in (401, 500, 503):
            fake.fail_next(status, body=f"echo {TOKEN}", headers={"Retry-After": "1"})
            with pytest.raises(DependencyError) as caught:
                await provider.create_invoice(intent())
            errors.append(caught.value)
        with pytest.raises(WebhookRejected) as rejected:
            await received(provider, {}, body)
        errors.append(rejected.value)
    await provider.aclose()
    assert logs, "expected some log lines"
    for entry in logs:
        assert TOKEN not in repr(entry)
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert TOKEN not in repr(provider)


# -- the hook -------------------------------------------------------------------------


def settings_with(table: dict[str, Any] | None, **sections: Any) -> Settings:
    plugins: dict[str, Any] = {"settings": {} if table is None else {"cryptobot": table}}
    return Settings.model_validate({"plugins": plugins, **sections})


def only_provider(settings: Settings) -> CryptoBotProvider:
    providers: list[PaymentProvider] = vpnbot_payment_providers(settings=settings)
    assert len(providers) == 1
    provider = providers[0]
    assert isinstance(provider, CryptoBotProvider)
    assert isinstance(provider, PaymentProvider)
    return provider


def test_not_configured_offers_nothing() -> None:
    assert vpnbot_payment_providers(settings=settings_with(None)) == []


def test_the_network_picks_the_base_url() -> None:
    assert only_provider(settings_with({"token": TOKEN})).base_url == "https://pay.crypt.bot/api/"
    testnet = settings_with({"token": TOKEN, "network": "testnet"})
    assert only_provider(testnet).base_url == "https://testnet-pay.crypt.bot/api/"
    custom = settings_with({"token": TOKEN, "base_url": "http://127.0.0.1:9/api"})
    assert only_provider(custom).base_url == "http://127.0.0.1:9/api/"


async def test_the_hook_builds_a_working_provider(fake: FakeCryptoBot) -> None:
    settings = settings_with(
        {"token": TOKEN, "base_url": f"{fake.url}/api/", "accepted_assets": ["TON"]},
        billing={"invoice_ttl_minutes": 15},
    )
    provider = only_provider(settings)
    await provider.create_invoice(intent())
    params = fake.calls("POST", "/api/createInvoice")[-1].json()
    assert params["expires_in"] == 900
    assert params["accepted_assets"] == "TON"
    await provider.aclose()


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({}, "plugins.settings.cryptobot.token"),
        ({"token": ""}, "plugins.settings.cryptobot.token"),
        ({"token": TOKEN, "network": "devnet"}, "plugins.settings.cryptobot.network"),
        ({"token": TOKEN, "tokn": "x"}, "plugins.settings.cryptobot.tokn"),
        (
            {"token": TOKEN, "invoice_expires_in_seconds": 2_678_401},
            "plugins.settings.cryptobot.invoice_expires_in_seconds",
        ),
    ],
)
def test_bad_settings_are_config_errors(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings_with(table))
    assert [problem.path for problem in caught.value.problems] == [path]
    assert TOKEN not in str(caught.value)


def test_plan_prices_the_provider_cannot_charge_are_config_errors() -> None:
    plan = {"title": {"en": "Month"}, "duration_days": 30, "backend": "main"}
    fiat = settings_with(
        {"token": TOKEN},
        plans={"month": {**plan, "prices": {"cryptobot": {"RUB": 19900, "USDT": 5_000_000}}}},
    )
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=fiat)
    assert [p.path for p in caught.value.problems] == ["plans.month.prices.cryptobot.USDT"]

    crypto = settings_with(
        {"token": TOKEN, "currency_type": "crypto", "asset_decimals": {"GRAM": 9}},
        plans={"month": {**plan, "prices": {"cryptobot": {"GRAM": 5, "ABCD": 1}}}},
    )
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=crypto)
    assert [p.path for p in caught.value.problems] == ["plans.month.prices.cryptobot.ABCD"]


# -- the fake itself ------------------------------------------------------------------


async def test_the_fake_follows_the_api_envelope(fake: FakeCryptoBot) -> None:
    client = CryptoPayClient(f"{fake.url}/api/", TOKEN)
    created = await client.call("createInvoice", {"asset": "TON", "amount": "1.5"})
    assert created["currency_type"] == "crypto" and created["status"] == "active"
    assert await client.call("deleteInvoice", {"invoice_id": created["invoice_id"]}) is True
    for method, params, name in [
        ("deleteInvoice", {"invoice_id": created["invoice_id"]}, "INVOICE_NOT_FOUND"),
        ("getInvoices", {"count": 1001}, "COUNT_INVALID"),
        ("createInvoice", {"asset": "TON", "amount": "1", "expires_in": 0}, "EXPIRES_IN_INVALID"),
        ("noSuchMethod", {}, "METHOD_NOT_FOUND"),
    ]:
        with pytest.raises(DependencyError) as caught:
            await client.call(method, params)
        assert name in str(caught.value) and not caught.value.transient
    await client.aclose()
