"""YooKassa's saved methods (autopayments) in the provider, against the fake YooKassa API on
127.0.0.1: what is asked, what a verified payment reports, how a charge of a saved method
ends, and what a hostile payment object cannot make us keep."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from plugins.yookassa import YooKassaProvider
from plugins.yookassa.payments import saved_method_of
from runtime.failures import DomainError
from runtime.plugin_api import RecurringPaymentProvider
from runtime.plugin_api.payments import ChargeState, PaymentIntent, SavedMethod
from runtime.testing.fakes.yookassa import FakeYooKassa, basic_auth

SHOP = "506071"
SECRET = "live_SecretKeyOfTheShop_4243"


def intent(**changes: Any) -> PaymentIntent:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "user_id": 4242,
        "amount_minor": 19900,
        "currency": "RUB",
        "purpose": "subscription",
        "title": "VPN, 30 days",
        "description": "30 days of VPN access",
        "plan_id": "month",
    }
    values.update(changes)
    return PaymentIntent(**values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeYooKassa]:
    peer = FakeYooKassa(SHOP, SECRET)
    async with peer.running():
        yield peer


@pytest.fixture
async def provider(fake: FakeYooKassa) -> AsyncIterator[YooKassaProvider]:
    subject = YooKassaProvider(SHOP, SECRET, base_url=f"{fake.url}/v3/", saved_methods=True)
    yield subject
    await subject.aclose()


async def saved(fake: FakeYooKassa, provider: YooKassaProvider, **pay: Any) -> str:
    """A consented payment, paid: the saved method's id."""
    invoice = await provider.create_invoice(intent(save_method=True))
    assert invoice.external_id is not None
    fake.pay(invoice.external_id, **pay)
    status = (await provider.fetch_status([invoice.external_id]))[0]
    assert status.payment is not None and status.payment.saved_method is not None
    return status.payment.saved_method.ref


async def test_the_provider_is_a_recurring_provider_only_when_configured(
    fake: FakeYooKassa,
) -> None:
    off = YooKassaProvider(SHOP, SECRET, base_url=f"{fake.url}/v3/")
    assert isinstance(off, RecurringPaymentProvider)
    assert off.saves_methods is False
    invoice = await off.create_invoice(intent(save_method=True))
    assert "save_payment_method" not in fake.calls("POST", "/v3/payments")[-1].json()
    assert invoice.external_id and "_save" not in fake.payments[invoice.external_id]
    with pytest.raises(DomainError):
        await off.charge_saved("abc", intent(), key="k1")
    await off.aclose()


async def test_consent_asks_to_save_and_the_verified_payment_reports_the_card(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    ref = await saved(fake, provider, last4="1111")
    assert fake.calls("POST", "/v3/payments")[-1].json()["save_payment_method"] is True
    assert fake.methods[ref]["saved"] is True
    assert fake.methods[ref]["title"] == "Bank card *1111"


async def test_without_consent_the_payment_reports_no_saved_method(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    invoice = await provider.create_invoice(intent())
    assert "save_payment_method" not in fake.calls("POST", "/v3/payments")[-1].json()
    assert invoice.external_id is not None
    fake.pay(invoice.external_id)
    status = (await provider.fetch_status([invoice.external_id]))[0]
    assert status.payment is not None and status.payment.saved_method is None


async def test_a_charge_of_the_saved_card_succeeds_at_once_and_once_per_key(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    ref = await saved(fake, provider)
    request = intent(purpose="renewal")
    first = await provider.charge_saved(ref, request, key="renewal:7:1700000000")
    again = await provider.charge_saved(ref, request, key="renewal:7:1700000000")
    assert first.state is ChargeState.SUCCEEDED and again.external_id == first.external_id
    assert first.payment is not None
    assert first.payment.intent_id == request.id and first.payment.amount_minor == 19900
    sent = fake.calls("POST", "/v3/payments")[-1]
    body = sent.json()
    assert body["payment_method_id"] == ref and body["capture"] is True
    assert "confirmation" not in body
    assert sent.headers["idempotence-key"] == "renewal:7:1700000000"
    assert len([p for p in fake.payments.values() if "_method_id" in p]) == 1


async def test_declines_carry_the_reason_and_a_revoked_permission_is_unusable(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    ref = await saved(fake, provider)
    fake.script_charge("canceled", reason="insufficient_funds")
    declined = await provider.charge_saved(ref, intent(), key="k-declined")
    assert declined.state is ChargeState.FAILED
    assert (declined.reason, declined.method_unusable) == ("insufficient_funds", False)
    fake.revoke_method(ref)
    revoked = await provider.charge_saved(ref, intent(), key="k-revoked")
    assert (revoked.reason, revoked.method_unusable) == ("permission_revoked", True)
    fake.script_charge("pending")
    await provider.charge_saved(ref, intent(), key="k-pending")  # revoked wins over scripts


async def test_a_pending_charge_is_pending_until_paid(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    ref = await saved(fake, provider)
    fake.script_charge("pending")
    charge = await provider.charge_saved(ref, intent(), key="k-later")
    assert charge.state is ChargeState.PENDING and charge.external_id is not None
    fake.pay(charge.external_id)
    status = (await provider.fetch_status([charge.external_id]))[0]
    assert status.payment is not None and status.payment.amount_minor == 19900


async def test_the_fake_refuses_charges_of_unknown_methods_and_mixed_requests(
    fake: FakeYooKassa, provider: YooKassaProvider
) -> None:
    ref = await saved(fake, provider)
    auth = {"Authorization": basic_auth(SHOP, SECRET)}
    amount = {"value": "1.00", "currency": "RUB"}
    async with httpx.AsyncClient(base_url=fake.url) as client:
        unknown = await client.post(
            "/v3/payments",
            json={"amount": amount, "payment_method_id": "not-saved", "capture": True},
            headers={**auth, "Idempotence-Key": "u1"},
        )
        mixed = await client.post(
            "/v3/payments",
            json={
                "amount": amount,
                "payment_method_id": ref,
                "confirmation": {"type": "redirect", "return_url": "https://t.me/"},
            },
            headers={**auth, "Idempotence-Key": "u2"},
        )
        not_bool = await client.post(
            "/v3/payments",
            json={
                "amount": amount,
                "save_payment_method": "yes",
                "confirmation": {"type": "redirect", "return_url": "https://t.me/"},
            },
            headers={**auth, "Idempotence-Key": "u3"},
        )
    assert [r.status_code for r in (unknown, mixed, not_bool)] == [400, 400, 400]
    assert unknown.json()["parameter"] == "payment_method_id"


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"type": "bank_card", "id": "m-1", "saved": True, "title": "Bank card *4444"}, "*4444"),
        ({"type": "bank_card", "id": "m-1", "saved": True, "card": {"last4": "9876"}}, "*9876"),
        ({"type": "bank_card", "id": "m-1", "saved": False, "title": "Bank card *4444"}, None),
        ({"type": "bank_card", "id": "../../etc", "saved": True}, None),
        ({"type": "bank_card", "id": "m" * 129, "saved": True}, None),
        ({"type": "bank_card", "id": "m-1", "saved": "true"}, None),
        ({"type": "bank_card", "id": "m-1", "saved": True, "title": "x\n" * 200}, "xxx"),
        ("not an object", None),
    ],
)
def test_a_hostile_payment_method_is_read_within_bounds(method: Any, expected: str | None) -> None:
    found = saved_method_of({"payment_method": method})
    if expected is None:
        assert found is None
        return
    assert isinstance(found, SavedMethod)
    assert expected in found.title
    assert len(found.title) <= 64 and found.title.isprintable()
