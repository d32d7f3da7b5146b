"""The Telegram Stars and card providers against the fake Bot API on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from plugins.telegram_payments import (
    BotApiPaymentsClient,
    CardProvider,
    StarsProvider,
    clip,
    vpnbot_payment_providers,
)
from runtime.config import ConfigError, Settings
from runtime.failures import DependencyError, FailureType, classify
from runtime.plugin_api import PaymentProvider, TelegramPaymentProvider
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    InvoiceState,
    PaymentIntent,
    RefundNotSupported,
    TelegramPayment,
)
from runtime.testing.contract import PaymentProviderContract, ProviderUnderTest
from runtime.testing.fakes.bot_api_payments import FakeBotApiPayments

BOT_TOKEN = "7777777:AAHbotTokenThatMustNeverBeShown_012"
CARD_TOKEN = "381764678:TEST:card-provider-secret-77"
USER = 4242


def intent(amount_minor: int = 150, currency: str = "XTR", **changes: Any) -> PaymentIntent:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "user_id": USER,
        "amount_minor": amount_minor,
        "currency": currency,
        "purpose": "subscription",
        "title": "VPN, 30 days",
        "description": "30 days of VPN access",
        "plan_id": "month",
    }
    values.update(changes)
    return PaymentIntent(**values)


def received(successful_payment: dict[str, Any], payer: int = USER) -> TelegramPayment:
    """A ``successful_payment`` as the bot hands it over: from an update, with its sender."""
    return TelegramPayment(
        payer_id=payer,
        currency=successful_payment["currency"],
        total_amount=successful_payment["total_amount"],
        invoice_payload=successful_payment["invoice_payload"],
        telegram_payment_charge_id=successful_payment["telegram_payment_charge_id"],
        provider_payment_charge_id=successful_payment.get("provider_payment_charge_id", ""),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApiPayments]:
    peer = FakeBotApiPayments(BOT_TOKEN)
    async with peer.running():
        yield peer


@pytest.fixture
async def client(fake: FakeBotApiPayments) -> AsyncIterator[BotApiPaymentsClient]:
    subject = BotApiPaymentsClient(BOT_TOKEN, api_base=fake.url)
    yield subject
    await subject.aclose()


@pytest.fixture
def stars(client: BotApiPaymentsClient) -> StarsProvider:
    return StarsProvider(client, lookback=timedelta(hours=24))


@pytest.fixture
def card() -> CardProvider:
    return CardProvider(provider_token=CARD_TOKEN, currency="RUB")


class TestStarsContract(PaymentProviderContract):
    @pytest.fixture
    async def subject(self) -> AsyncIterator[ProviderUnderTest]:
        fake = FakeBotApiPayments(BOT_TOKEN)
        async with fake.running() as url:
            client = BotApiPaymentsClient(BOT_TOKEN, api_base=url)
            yield ProviderUnderTest(
                StarsProvider(client),
                fake,
                intent(150, "XTR"),
                secrets=[BOT_TOKEN],
                creates_remotely=False,
            )
            await client.aclose()


class TestCardContract(PaymentProviderContract):
    @pytest.fixture
    async def subject(self) -> AsyncIterator[ProviderUnderTest]:
        yield ProviderUnderTest(
            CardProvider(provider_token=CARD_TOKEN, currency="RUB"),
            None,
            intent(19900, "RUB"),
            secrets=[CARD_TOKEN],
            creates_remotely=False,
        )


# -- invoices -------------------------------------------------------------------------


async def test_a_stars_invoice_is_sent_in_the_chat(stars: StarsProvider) -> None:
    the_intent = intent(150, "XTR")
    invoice = await stars.create_invoice(the_intent)
    assert invoice.external_id is None and invoice.url is None
    assert invoice.send_in_chat == {
        "title": "VPN, 30 days",
        "description": "30 days of VPN access",
        "payload": the_intent.id,
        "currency": "XTR",
        "prices": [{"label": "VPN, 30 days", "amount": 150}],
        "provider_token": "",
        "start_parameter": "start",  # the intent named none
    }


async def test_an_invoice_links_a_forwarded_copy_to_the_intents_start_parameter(
    stars: StarsProvider, card: CardProvider
) -> None:
    for provider, the_intent in ((stars, intent(150, "XTR")), (card, intent(19900, "RUB"))):
        invoice = await provider.create_invoice(
            dataclasses.replace(the_intent, start_parameter="plans")
        )
        assert invoice.send_in_chat is not None
        assert invoice.send_in_chat["start_parameter"] == "plans"
        for bad in ("two words", "x" * 65, "слово"):
            with pytest.raises(Exception) as caught:
                await provider.create_invoice(dataclasses.replace(the_intent, start_parameter=bad))
            assert classify(caught.value).type is FailureType.DOMAIN


async def test_a_card_invoice_carries_the_provider_token_and_minor_units(
    card: CardProvider,
) -> None:
    the_intent = intent(19900, "RUB")
    invoice = await card.create_invoice(the_intent)
    args = invoice.send_in_chat
    assert args is not None
    assert args["currency"] == "RUB"
    assert args["provider_token"] == CARD_TOKEN
    assert args["prices"] == [{"label": "VPN, 30 days", "amount": 19900}]
    assert args["payload"] == the_intent.id


async def test_the_invoice_arguments_pass_the_bot_api_checks(
    fake: FakeBotApiPayments, client: BotApiPaymentsClient, stars: StarsProvider, card: CardProvider
) -> None:
    long_title = "Подписка на VPN — 12 месяцев, семейный тариф 👨‍👩‍👧‍👦 и ещё"
    for provider, the_intent in (
        (stars, intent(150, "XTR", title=long_title, description="д" * 400)),
        (card, intent(19900, "RUB", title=long_title, description="")),
    ):
        invoice = await provider.create_invoice(the_intent)
        assert invoice.send_in_chat is not None
        link = await client.call("createInvoiceLink", invoice.send_in_chat)
        assert link.startswith("https://t.me/$")
    stars_link, card_link = fake.invoice_links
    assert len(stars_link["prices"]) == 1 and stars_link["provider_token"] == ""
    assert len(stars_link["description"]) == 255
    assert card_link["provider_token"] == CARD_TOKEN
    assert card_link["description"] == long_title  # no description: the whole title


async def test_the_fake_refuses_what_telegram_refuses(client: BotApiPaymentsClient) -> None:
    base = {"title": "t", "description": "d", "payload": "p"}
    two_prices = [{"label": "a", "amount": 1}, {"label": "b", "amount": 1}]
    cases = [
        ({**base, "currency": "XTR", "prices": two_prices}, "STARS_INVOICE_INVALID"),
        (
            {**base, "currency": "XTR", "prices": two_prices[:1], "provider_token": "x"},
            "STARS_INVOICE_INVALID",
        ),
        ({**base, "currency": "RUB", "prices": two_prices}, "PAYMENT_PROVIDER_INVALID"),
        ({**base, "title": "t" * 33, "currency": "XTR", "prices": two_prices[:1]}, "TITLE"),
    ]
    for params, reason in cases:
        with pytest.raises(DependencyError) as caught:
            await client.call("createInvoiceLink", params)
        assert reason in str(caught.value) and not caught.value.transient


async def test_an_intent_in_another_currency_is_a_domain_error(
    stars: StarsProvider, card: CardProvider
) -> None:
    for provider, the_intent in ((stars, intent(100, "RUB")), (card, intent(100, "XTR"))):
        with pytest.raises(Exception) as caught:
            await provider.create_invoice(the_intent)
        assert classify(caught.value).type is FailureType.DOMAIN


def test_clip_keeps_within_the_limit_on_character_boundaries() -> None:
    assert clip("  short  ", 32) == "short"
    assert clip("a" * 32, 32) == "a" * 32
    cut = clip("a" * 40, 32)
    assert cut == "a" * 31 + "…"
    emoji = clip("x" * 30 + "😀😀", 32)  # each emoji is two UTF-16 units
    assert emoji == "x" * 30 + "…"
    joined = clip("y" * 29 + "👨\u200d👩\u200d👧", 32)
    assert not joined.rstrip("…").endswith("\u200d")
    for text in ("Подписка на VPN — 12 месяцев 👨‍👩‍👧‍👦" * 3, "é" * 100):
        clipped = clip(text, 32)
        assert len(clipped.encode("utf-16-le")) // 2 <= 32
        clipped.encode("utf-8")  # still valid text


# -- confirmations --------------------------------------------------------------------


async def test_a_successful_payment_is_one_confirmed_payment_with_its_payer(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    the_intent = intent(150, "XTR")
    successful_payment = fake.pay_stars(USER, the_intent.id, 150)

    payment = await stars.confirm_telegram_payment(received(successful_payment, payer=USER))

    assert payment.provider == "stars"
    assert payment.external_id == successful_payment["telegram_payment_charge_id"]
    assert payment.intent_id == the_intent.id
    assert (payment.amount_minor, payment.currency, payment.payer_id) == (150, "XTR", USER)


async def test_a_card_payment_is_confirmed_with_its_charge_ids(
    fake: FakeBotApiPayments, card: CardProvider
) -> None:
    successful_payment = fake.card_payment("intent-1", 19900, "RUB")
    payment = await card.confirm_telegram_payment(received(successful_payment))
    assert payment.external_id == successful_payment["telegram_payment_charge_id"]
    assert payment.raw["provider_payment_charge_id"].startswith("prov_")
    assert (payment.amount_minor, payment.currency, payment.intent_id) == (19900, "RUB", "intent-1")


async def test_another_currency_is_reported_as_paid_for_the_core_to_refuse(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    """The provider does not hide a payment in another currency behind an error: the core
    compares it with the intent, refuses it, records it and tells the payer the truth."""
    payment = await stars.confirm_telegram_payment(received(fake.card_payment("i", 150, "RUB")))
    assert (payment.amount_minor, payment.currency, payment.provider) == (150, "RUB", "stars")


async def test_telegram_payments_have_no_http_door(
    stars: StarsProvider, card: CardProvider
) -> None:
    for provider in (stars, card):
        assert provider.webhook is None
        assert isinstance(provider, TelegramPaymentProvider)
        assert not hasattr(provider, "parse_webhook")


# -- refunds --------------------------------------------------------------------------


def confirmed(charge_id: str, amount: int = 150, provider: str = "stars") -> ConfirmedPayment:
    return ConfirmedPayment(provider, charge_id, "intent", amount, "XTR")


async def test_a_star_refund_calls_refund_star_payment(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    charge_id = fake.pay_stars(USER, "intent", 150)["telegram_payment_charge_id"]

    await stars.refund(confirmed(charge_id), user_id=USER)

    (call,) = fake.calls("POST", f"/bot{BOT_TOKEN}/refundStarPayment")
    assert call.json() == {"user_id": USER, "telegram_payment_charge_id": charge_id}
    assert fake.payments[charge_id].refunded


async def test_refunding_twice_is_a_permanent_failure(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    charge_id = fake.pay_stars(USER, "intent", 150)["telegram_payment_charge_id"]
    await stars.refund(confirmed(charge_id), user_id=USER)
    with pytest.raises(DependencyError) as caught:
        await stars.refund(confirmed(charge_id), user_id=USER)
    assert "CHARGE_ALREADY_REFUNDED" in str(caught.value)
    assert classify(caught.value).transient is False
    with pytest.raises(DependencyError) as unknown:
        await stars.refund(confirmed("stxNoSuchCharge"), user_id=USER)
    assert "CHARGE_NOT_FOUND" in str(unknown.value) and not unknown.value.transient


@pytest.mark.parametrize(("status", "transient"), [(500, True), (502, True), (403, False)])
async def test_refund_failures_are_classified(
    fake: FakeBotApiPayments, stars: StarsProvider, status: int, transient: bool
) -> None:
    fake.fail_next(status, body={"ok": False, "error_code": status, "description": "injected"})
    with pytest.raises(DependencyError) as caught:
        await stars.refund(confirmed("c"), user_id=USER)
    assert caught.value.transient is transient


async def test_a_429_retry_after_comes_from_the_header_or_the_body(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    fake.rate_limit_next(9)
    with pytest.raises(DependencyError) as caught:
        await stars.refund(confirmed("c"), user_id=USER)
    assert caught.value.transient and caught.value.retry_after == 9
    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 4",
        "parameters": {"retry_after": 4},
    }
    fake.fail_next(429, body=body)
    with pytest.raises(DependencyError) as caught:
        await stars.refund(confirmed("c"), user_id=USER)
    assert caught.value.retry_after == 4


async def test_the_bot_token_never_reaches_errors_or_logs(fake: FakeBotApiPayments) -> None:
    client = BotApiPaymentsClient(BOT_TOKEN, api_base=fake.url)
    stars = StarsProvider(client)
    errors: list[BaseException] = []
    with capture_logs() as logs:
        charge_id = fake.pay_stars(USER, "intent", 150)["telegram_payment_charge_id"]
        await stars.refund(confirmed(charge_id), user_id=USER)
        for status in (400, 404, 500):
            fake.fail_next(status, body=f"no such bot{BOT_TOKEN}")
            with pytest.raises(DependencyError) as caught:
                await stars.refund(confirmed(charge_id), user_id=USER)
            errors.append(caught.value)
        with pytest.raises(DependencyError) as caught:
            await stars.refund(confirmed(charge_id), user_id=USER)  # already refunded
        errors.append(caught.value)
    await client.aclose()
    # an unreachable Bot API: httpx's own error quotes the URL, with the token in it
    unreachable = StarsProvider(BotApiPaymentsClient(BOT_TOKEN, api_base="http://127.0.0.1:9"))
    with pytest.raises(DependencyError) as caught:
        await unreachable.refund(confirmed(charge_id), user_id=USER)
    await unreachable.aclose()
    errors.append(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None

    assert any(entry.get("event") == "star payment refunded" for entry in logs)
    for entry in logs:
        assert BOT_TOKEN not in repr(entry)
    for error in errors:
        assert BOT_TOKEN not in str(error) and BOT_TOKEN not in repr(error)
    assert BOT_TOKEN not in repr(stars) and BOT_TOKEN not in repr(client)


async def test_the_card_token_never_reaches_logs(
    fake: FakeBotApiPayments, card: CardProvider
) -> None:
    with capture_logs() as logs:
        await card.create_invoice(intent(19900, "RUB"))
        await card.confirm_telegram_payment(received(fake.card_payment("i", 19900, "RUB")))
        with pytest.raises(RefundNotSupported) as refused:
            await card.refund(confirmed("c", provider="card"), user_id=USER)
    for entry in logs:
        assert CARD_TOKEN not in repr(entry)
    for text in (str(refused.value), repr(card)):
        assert CARD_TOKEN not in text


# -- reconciliation -------------------------------------------------------------------


async def test_stars_fetch_status_reports_payments_telegram_has_seen(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    fake.add_history(250)  # a month old: beyond the lookback
    paid, refunded, elsewhere = intent(), intent(), intent()
    fake.pay_stars(USER, elsewhere.id, 10)
    first = fake.pay_stars(USER, paid.id, 150)["telegram_payment_charge_id"]
    second = fake.pay_stars(USER + 1, refunded.id, 300)["telegram_payment_charge_id"]
    await stars.refund(confirmed(second, 300), user_id=USER + 1)
    fake.requests.clear()

    statuses = await stars.fetch_status([paid.id, second, "never-paid"])

    assert {s.external_id for s in statuses} == {first, second}
    by_id = {s.external_id: s for s in statuses}
    assert all(s.state is InvoiceState.PAID for s in statuses)
    payment = by_id[first].payment
    assert payment is not None
    assert (payment.intent_id, payment.amount_minor, payment.currency) == (paid.id, 150, "XTR")
    assert payment.paid_at is not None and payment.raw["refunded"] is False
    assert payment.payer_id == USER  # the Star transaction says who paid
    refunded_payment = by_id[second].payment
    assert refunded_payment is not None and refunded_payment.raw["refunded"] is True
    assert refunded_payment.intent_id == refunded.id
    assert refunded_payment.payer_id == USER + 1
    first_pass = len(fake.calls(path_prefix=f"/bot{BOT_TOKEN}/getStarTransactions"))
    assert first_pass <= 15

    # The count is remembered: the next pass costs a probe and the recent page.
    fake.requests.clear()
    assert {s.external_id for s in await stars.fetch_status([paid.id])} == {first}
    assert len(fake.calls(path_prefix=f"/bot{BOT_TOKEN}/getStarTransactions")) == 2


async def test_the_transaction_count_is_found_for_any_history(
    fake: FakeBotApiPayments, client: BotApiPaymentsClient
) -> None:
    for total in (0, 1, 99, 100, 101, 250, 1234):
        fake.add_history(total - len(fake.transactions))
        fresh = BotApiPaymentsClient(BOT_TOKEN, api_base=fake.url)
        assert await fresh.transaction_count() == total
        await fresh.aclose()
        assert await client.transaction_count() == total  # the remembered count grows


async def test_old_payments_are_beyond_the_lookback(
    fake: FakeBotApiPayments, stars: StarsProvider
) -> None:
    old = intent()
    fake.pay_stars(USER, old.id, 150, date=int(time.time()) - 10 * 86400)
    fake.add_history(150, date=int(time.time()) - 5 * 86400)
    assert list(await stars.fetch_status([old.id])) == []


async def test_card_fetch_status_asks_nothing(fake: FakeBotApiPayments, card: CardProvider) -> None:
    assert list(await card.fetch_status(["anything"])) == []
    assert fake.requests == []


# -- the hook -------------------------------------------------------------------------


def settings_with(
    table: dict[str, Any] | None, *, token: str | None = BOT_TOKEN, **sections: Any
) -> Settings:
    telegram: dict[str, Any] = {"token": token} if token else {}
    telegram.update(sections.pop("telegram", {}))
    plugins: dict[str, Any] = {"settings": {} if table is None else {"telegram_payments": table}}
    return Settings.model_validate({"telegram": telegram, "plugins": plugins, **sections})


def test_not_configured_offers_nothing() -> None:
    assert vpnbot_payment_providers(settings=settings_with(None)) == []


def test_stars_by_default_and_card_with_a_provider_token() -> None:
    providers = vpnbot_payment_providers(settings=settings_with({}))
    assert [p.name for p in providers] == ["stars"]
    providers = vpnbot_payment_providers(
        settings=settings_with({"card_provider_token": CARD_TOKEN, "card_currency": "USD"})
    )
    assert [p.name for p in providers] == ["stars", "card"]
    assert all(isinstance(p, PaymentProvider) for p in providers)
    card = providers[1]
    assert isinstance(card, CardProvider) and card.currency == "USD"
    providers = vpnbot_payment_providers(
        settings=settings_with({"stars_enabled": False, "card_provider_token": ""})
    )
    assert providers == []


def test_a_missing_bot_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings_with({}, token=None))
    assert [p.path for p in caught.value.problems] == ["telegram.token"]


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"card_currency": "XTR"}, "plugins.settings.telegram_payments.card_currency"),
        ({"card_currency": "rub"}, "plugins.settings.telegram_payments.card_currency"),
        ({"stars": True}, "plugins.settings.telegram_payments.stars"),
        ({"bot_api_base": "ftp://x"}, "plugins.settings.telegram_payments.bot_api_base"),
    ],
)
def test_bad_settings_are_config_errors(table: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings_with(table))
    assert [p.path for p in caught.value.problems] == [path]


def test_plan_prices_in_the_wrong_currency_are_config_errors() -> None:
    plan = {"title": {"en": "Month"}, "duration_days": 30, "backend": "main"}
    prices = {"stars": {"XTR": 150, "RUB": 1}, "card": {"RUB": 19900, "USD": 300}}
    settings = settings_with(
        {"card_provider_token": CARD_TOKEN}, plans={"month": {**plan, "prices": prices}}
    )
    with pytest.raises(ConfigError) as caught:
        vpnbot_payment_providers(settings=settings)
    assert sorted(p.path for p in caught.value.problems) == [
        "plans.month.prices.card.USD",
        "plans.month.prices.stars.RUB",
    ]
    assert CARD_TOKEN not in str(caught.value)


async def test_the_hook_uses_the_telegram_api_base(fake: FakeBotApiPayments) -> None:
    settings = settings_with({}, telegram={"api_base": fake.url})
    (stars,) = vpnbot_payment_providers(settings=settings)
    assert isinstance(stars, StarsProvider)
    charge_id = fake.pay_stars(USER, "intent", 150)["telegram_payment_charge_id"]
    await stars.refund(confirmed(charge_id), user_id=USER)
    assert fake.payments[charge_id].refunded
    await stars.aclose()

    other = FakeBotApiPayments(BOT_TOKEN)
    async with other.running() as url:
        settings = settings_with({"bot_api_base": url}, telegram={"api_base": fake.url})
        (stars,) = vpnbot_payment_providers(settings=settings)
        assert isinstance(stars, StarsProvider)
        charge_id = other.pay_stars(USER, "intent", 150)["telegram_payment_charge_id"]
        await stars.refund(confirmed(charge_id), user_id=USER)
        assert other.payments[charge_id].refunded
        await stars.aclose()


async def test_a_wrong_bot_token_is_a_permanent_failure(fake: FakeBotApiPayments) -> None:
    wrong = "1:AAHanotherBotTokenThatIsWrong_000000000"
    client = BotApiPaymentsClient(wrong, api_base=fake.url)
    with pytest.raises(DependencyError) as caught:
        await StarsProvider(client).refund(confirmed("c"), user_id=USER)
    assert "Unauthorized" in str(caught.value) and not caught.value.transient
    assert wrong not in str(caught.value)
    await client.aclose()
    right = BotApiPaymentsClient(BOT_TOKEN, api_base=fake.url)
    with pytest.raises(DependencyError) as missing:
        await right.call("noSuchMethod")
    assert "Not Found" in str(missing.value)
    await right.aclose()
