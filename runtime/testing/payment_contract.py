"""The behaviour every payment provider must have, checked against the real billing core on
a real PostgreSQL, through the doors a payment really comes in by.

A plugin author subclasses ``PaymentProviderContract`` and provides one async fixture,
``subject``, yielding a ``ProviderUnderTest``; the tests also need the ``db`` fixture (a
fresh migrated database: ``from runtime.testing.fixtures import database_dsn, db,
postgres`` in your ``conftest.py``)::

    class TestMyProvider(PaymentProviderContract):
        @pytest.fixture
        async def subject(self) -> AsyncIterator[ProviderUnderTest]:
            fake = MyFakePeer(token="t")
            async with fake.running() as url:
                provider = MyProvider(url, token="t")

                async def paid(checkout, *, amount_minor, currency):
                    fake.pay(checkout.invoice.external_id)  # then the peer's own delivery
                    return fake.signed_delivery(checkout.invoice.external_id,
                                                amount_minor=amount_minor, currency=currency)

                yield ProviderUnderTest(provider, fake, an_intent(), secrets=["t"],
                                        paid_delivery=paid)

What is checked, for every provider:

- the plugin manager would load it (async methods; a ``webhook`` that is None or a
  ``WebhookReceiver``), and in-chat invoices carry the intent and a ``start_parameter``;
- ``POST /webhooks/payments/<name>`` with an unauthenticated or wrongly signed request
  (garbage, a body naming a real intent, your ``forge``'d ones and, as the provider's
  ``DeliveryProof`` declares, the authentic body without its signed headers or with a
  changed byte) is answered 404 (no webhook) or 401, before billing or the database is
  asked, changes nothing and raises no alert;
- a provider whose deliveries are verified by fetching the payment back from the peer:
  a notification anyone could write, naming a real unpaid payment, a payment the peer
  never issued, or the intent itself, is refused the same way; once the peer says the
  payment is paid, the same notification credits it;
- a provider that takes deliveries only from the peer's source networks: an authentic
  delivery from outside them (or from no readable address) is refused the same way;
- an authentic payment, through the provider's own door (its webhook, or Telegram's
  ``successful_payment`` for a ``TelegramPaymentProvider``), is credited once; its replay is
  a logged skip that changes nothing;
- an authentic payment of another amount, or in another currency, is refused (nothing
  credited), recorded, and alerted once (delivered twice, one alert), under a key made of
  our own data only;
- for Telegram payments: a payer who is not the intent's owner gets nothing credited, and
  the charge is recorded against the payer.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from starlette.applications import Starlette
from structlog.testing import capture_logs

from runtime.alerts import Alert, Severity
from runtime.billing import Billing, Checkout, payment_webhook_routes
from runtime.catalog import Catalog
from runtime.config import Settings
from runtime.failures import DependencyError, classify
from runtime.plugin_api._manager import is_payment_provider
from runtime.plugin_api.payments import (
    PaymentIntent,
    PaymentProvider,
    TelegramPayment,
    TelegramPaymentProvider,
    WebhookReceiver,
)
from runtime.storage import Connection, Database
from runtime.storage.payments import Finalized, Verdict

from .fakes import FakePeer

Delivery = tuple[dict[str, str], bytes]
"""An HTTP delivery: (headers, raw body)."""

PLAN = "contract_plan"
OWNER = 777_001
STRANGER = 777_002


class PaidDelivery(Protocol):
    async def __call__(self, checkout: Checkout, *, amount_minor: int, currency: str) -> Delivery:
        """The peer's authentic webhook delivery saying ``checkout`` was paid this amount in
        this currency (the invoice marked paid on the peer first, where it keeps state)."""
        ...


class Signature(enum.Enum):
    """Where the peer's signature of a webhook delivery is."""

    HEADERS = "headers"
    """In the request's headers: the body alone proves nothing, and a changed byte of it
    breaks the signature."""
    BODY = "body"
    """A field of the body (Heleket's ``sign``): the body is its own proof, so the same
    body from anyone, with any headers, is a replay of an authentic delivery, not a
    forgery (the core credits it once)."""
    NONE = "none"
    """Nothing is signed (YooKassa): a delivery is only a pointer to a payment, and must be
    verified by fetching that payment back from the peer (``fetched``)."""


@dataclass(frozen=True)
class DeliveryProof:
    """How a webhook provider proves its deliveries, as configured under test; the kit
    forges deliveries against each proof declared."""

    signature: Signature = Signature.HEADERS
    fetched: bool = False
    """``authenticate`` fetches the payment a delivery names from the peer and refuses the
    delivery unless the peer confirms it; ``ProviderUnderTest.notification`` is then
    required."""
    source_networks: Sequence[str] = ()
    """The networks deliveries are taken from, when the provider is configured to check
    the sender's address; empty when it does not check."""
    source_header: str = "x-real-ip"
    """The header the operator's reverse proxy writes the sender's address into. The kit
    sends its deliveries from an address inside ``source_networks`` unless it tries one
    from outside."""


@dataclass
class ProviderUnderTest:
    provider: PaymentProvider
    peer: FakePeer | None
    intent: PaymentIntent
    """An intent the provider can invoice. Its amount and currency are the price of the
    contract's plan."""
    secrets: Sequence[str] = ()
    creates_remotely: bool = True
    """False when creating an invoice needs no peer call (Telegram sends it in the chat)."""
    paid_delivery: PaidDelivery | None = None
    """Required when the provider has a ``webhook``."""
    forge: Callable[[Delivery], Sequence[Delivery]] | None = None
    """More unauthenticated variants of an authentic delivery (signed with another key...)."""
    proof: DeliveryProof = DeliveryProof()
    """How the provider's deliveries are proven; by default signed in the headers."""
    notification: Callable[[str], Delivery] | None = None
    """For a provider whose deliveries are ``fetched``: the delivery anyone could write,
    in the peer's shape, saying that the peer's payment with this external id was paid
    (no proof of its own). Required with ``DeliveryProof.fetched``."""


class _Alerts:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def submit(self, alert: Alert) -> None:
        self.alerts.append(alert)


@dataclass
class _Shop:
    subject: ProviderUnderTest
    db: Database
    billing: Billing
    alerts: _Alerts
    billing_asked: list[str]

    @property
    def name(self) -> str:
        return self.subject.provider.name

    def client(self) -> httpx.AsyncClient:
        def billing() -> Billing:
            self.billing_asked.append("billing")
            return self.billing

        routes = payment_webhook_routes(billing, providers=[self.subject.provider])
        transport = httpx.ASGITransport(app=Starlette(routes=routes))
        return httpx.AsyncClient(transport=transport, base_url="http://vpnbot.test")

    async def post(
        self, delivery: Delivery, *, name: str | None = None, as_sent: bool = False
    ) -> httpx.Response:
        """POST ``delivery`` to the webhook; from inside the declared source networks
        unless it names its sender already or ``as_sent`` keeps its headers as they are."""
        headers, body = delivery
        proof = self.subject.proof
        if proof.source_networks and not as_sent:
            known = {name.lower() for name in headers}
            if proof.source_header.lower() not in known:
                inside = str(_inside(proof.source_networks))
                headers = {**headers, proof.source_header: inside}
        async with self.client() as http:
            return await http.post(
                f"/webhooks/payments/{name or self.name}", headers=headers, content=body
            )

    async def checkout(self) -> Checkout:
        return await self.billing.buy(OWNER, PLAN, self.name)

    async def state(self) -> dict[str, list[dict[str, Any]]]:
        return await money_state(self.db)

    async def pay(
        self, checkout: Checkout, *, amount_minor: int, currency: str, payer: int = OWNER
    ) -> Callable[[], Awaitable[Verdict]]:
        """An authentic payment through the provider's own door; returns a function that
        delivers it (again and again: a replay), giving the verdict."""
        provider = self.subject.provider
        if isinstance(provider, TelegramPaymentProvider):
            paid = TelegramPayment(
                payer_id=payer,
                currency=currency,
                total_amount=amount_minor,
                invoice_payload=checkout.payment.id,
                telegram_payment_charge_id=f"contract-{uuid.uuid4().hex}",
                provider_payment_charge_id=f"provider-{uuid.uuid4().hex}",
            )

            async def in_telegram() -> Verdict:
                result: Finalized = await self.billing.confirm_telegram(paid)
                return result.verdict

            return in_telegram
        assert self.subject.paid_delivery is not None, "a webhook provider needs paid_delivery"
        delivery = await self.subject.paid_delivery(
            checkout, amount_minor=amount_minor, currency=currency
        )

        async def by_webhook() -> Verdict:
            response = await self.post(delivery)
            assert response.status_code == 200, (response.status_code, response.text)
            (verdict,) = response.json()["results"]
            return Verdict(verdict)

        return by_webhook


async def money_state(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row a payment may change (payments, subscriptions, outbox, users), to compare
    before and after a delivery."""

    async def unit(conn: Connection) -> dict[str, list[dict[str, Any]]]:
        tables = {
            "payments": "select * from payments order by created_at, id",
            "subscriptions": "select * from subscriptions order by id",
            "outbox": "select * from outbox order by id",
            "users": "select * from users order by telegram_id",
        }
        return {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in tables.items()}

    return await db.read(unit)


def _other_currency(currency: str) -> str:
    return "USD" if currency != "USD" else "EUR"


def _inside(networks: Sequence[str]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    network = ipaddress.ip_network(networks[0], strict=False)
    return network.network_address + (1 if network.num_addresses > 1 else 0)


OUTSIDE = ("203.0.113.7", "2001:db8::7", "127.0.0.1")
"""Documentation addresses (RFC 5737, RFC 3849) and loopback: no peer sends from them."""


def _outside(networks: Sequence[str]) -> list[str]:
    declared = [ipaddress.ip_network(n, strict=False) for n in networks]
    found = [a for a in OUTSIDE if not any(ipaddress.ip_address(a) in net for net in declared)]
    assert found, "the declared source networks take every address the kit tries"
    return found


def _unauthenticated(delivery: Delivery, intent_id: str, proof: DeliveryProof) -> list[Delivery]:
    """What anyone could send: garbage, a body naming a real intent and, when the headers
    carry the signature, the authentic body without them and the authentic headers with a
    changed body (when the body carries it, that body is authentic from anyone; when
    nothing is signed, the peer is asked, which ``fetched`` checks)."""
    headers, body = delivery
    naming = (
        b'{"invoice_payload":"%s","telegram_payment_charge_id":"forged","currency":"XTR",'
        b'"total_amount":1,"update_type":"invoice_paid","payload":{"invoice_id":1,'
        b'"payload":"%s","status":"paid","amount":"1"}}' % (intent_id.encode(), intent_id.encode())
    )
    plain = {"content-type": "application/json"}
    anyone = [(headers, b""), (plain, b"\x00garbage{"), (plain, naming), (headers, naming)]
    changed = (headers, body[:-1] + bytes([body[-1] ^ 1]) if body else b"x")
    if proof.signature is Signature.HEADERS:
        return [
            (plain, body),
            (headers, body + b" "),
            changed,
            ({name: "0" * 64 for name in headers}, body),
            *anyone,
        ]
    if proof.signature is Signature.BODY:
        return [changed, *anyone]
    return anyone


class PaymentProviderContract:
    """Subclass and provide a ``subject`` fixture yielding a ``ProviderUnderTest``."""

    @pytest.fixture
    async def shop(self, subject: ProviderUnderTest, db: Database) -> AsyncIterator[_Shop]:
        intent = subject.intent
        settings = Settings.model_validate(
            {
                "plans": {
                    PLAN: {
                        "title": {"en": "Contract plan"},
                        "duration_days": 30,
                        "backend": "contract_vpn",
                        "prices": {subject.provider.name: {intent.currency: intent.amount_minor}},
                    }
                }
            }
        )
        alerts = _Alerts()
        billing = Billing(
            db,
            Catalog.from_settings(settings),
            {subject.provider.name: subject.provider},
            alerts,
            balance_currency=intent.currency,
        )
        yield _Shop(subject, db, billing, alerts, [])

    # -- the plugin's shape and its invoices ------------------------------------------

    async def test_the_plugin_manager_would_load_it(self, subject: ProviderUnderTest) -> None:
        provider = subject.provider
        assert is_payment_provider(provider), f"{provider!r} is not a loadable PaymentProvider"
        receiver = provider.webhook
        assert receiver is None or isinstance(receiver, WebhookReceiver)
        if receiver is not None:
            assert subject.paid_delivery is not None, "a webhook provider needs paid_delivery"
        if isinstance(provider, TelegramPaymentProvider):
            assert receiver is None, "Telegram payments are proven by the update, not HTTP"
        proof = subject.proof
        if receiver is not None and proof.signature is Signature.NONE:
            assert proof.fetched, "an unsigned delivery proves nothing until fetched back"
        if proof.fetched:
            assert subject.notification is not None, "a fetched proof needs notification"

    async def test_create_invoice_carries_the_intent(self, subject: ProviderUnderTest) -> None:
        invoice = await subject.provider.create_invoice(subject.intent)
        assert invoice.url or invoice.send_in_chat
        if invoice.send_in_chat is not None:
            assert subject.intent.id in str(invoice.send_in_chat.get("payload"))

    async def test_an_invoice_sent_in_the_chat_cannot_be_paid_from_a_forwarded_copy(
        self, subject: ProviderUnderTest
    ) -> None:
        intent = dataclasses.replace(subject.intent, start_parameter="plans")
        invoice = await subject.provider.create_invoice(intent)
        if invoice.send_in_chat is None:
            pytest.skip("the invoice is not sent in the chat")
        assert invoice.send_in_chat.get("start_parameter") == "plans"

    async def test_no_open_invoices_asks_nothing(self, subject: ProviderUnderTest) -> None:
        assert list(await subject.provider.fetch_status([])) == []

    @pytest.mark.parametrize(("status", "transient"), [(502, True), (429, True), (400, False)])
    async def test_create_failures_are_classified(
        self, subject: ProviderUnderTest, status: int, transient: bool
    ) -> None:
        if subject.peer is None or not subject.creates_remotely:
            pytest.skip("no peer call to fail")
        subject.peer.fail_next(status, body={"ok": False}, headers={"Retry-After": "3"}, times=50)
        with pytest.raises(DependencyError) as caught:
            await subject.provider.create_invoice(subject.intent)
        assert classify(caught.value).transient is transient
        for secret in subject.secrets:
            assert secret not in str(caught.value)

    # -- the HTTP door ---------------------------------------------------------------------

    async def test_unauthenticated_requests_are_refused_and_change_nothing(
        self, shop: _Shop
    ) -> None:
        checkout = await shop.checkout()
        intent = checkout.payment
        if shop.subject.provider.webhook is not None:
            assert shop.subject.paid_delivery is not None
            authentic = await shop.subject.paid_delivery(
                checkout, amount_minor=intent.amount_minor, currency=intent.currency
            )
            refused_with = 401
        else:
            body = b'{"invoice_payload":"%s","currency":"%s","total_amount":%d}' % (
                intent.id.encode(),
                intent.currency.encode(),
                intent.amount_minor,
            )
            authentic = ({"content-type": "application/json"}, body)
            refused_with = 404
        forged = _unauthenticated(authentic, intent.id, shop.subject.proof)
        if shop.subject.forge is not None:
            forged += list(shop.subject.forge(authentic))
        before = await shop.state()

        with capture_logs() as logs:
            for delivery in forged:
                response = await shop.post(delivery)
                assert response.status_code == refused_with, (delivery, response.text)

        assert shop.billing_asked == [], "billing was asked before authentication passed"
        assert await shop.state() == before
        assert shop.alerts.alerts == []
        assert all(entry.get("log_level") in ("debug", "info", "warning") for entry in logs)
        for entry in logs:
            assert intent.id not in str(entry.keys())

    async def test_a_forged_notification_is_checked_at_the_peer_and_changes_nothing(
        self, shop: _Shop
    ) -> None:
        subject = shop.subject
        if subject.provider.webhook is None or not subject.proof.fetched:
            pytest.skip("deliveries are not verified by fetching them back")
        assert subject.notification is not None and subject.paid_delivery is not None
        checkout = await shop.checkout()
        intent = checkout.payment
        unpaid = checkout.invoice.external_id or intent.id
        forged = [
            subject.notification(unpaid),  # a real payment, not paid
            subject.notification(str(uuid.uuid4())),  # a payment the peer never issued
            subject.notification(intent.id),  # our own id, not the peer's
        ]
        before = await shop.state()

        with capture_logs() as logs:
            for delivery in forged:
                response = await shop.post(delivery)
                assert response.status_code == 401, (delivery, response.text)

        assert shop.billing_asked == [], "billing was asked before the peer confirmed"
        assert await shop.state() == before
        assert shop.alerts.alerts == []
        assert all(entry.get("log_level") in ("debug", "info", "warning") for entry in logs)
        for entry in logs:
            assert intent.id not in str(entry.keys())
        # the peer's word made the difference: once it says paid, the same claim credits
        await subject.paid_delivery(
            checkout, amount_minor=intent.amount_minor, currency=intent.currency
        )
        response = await shop.post(subject.notification(unpaid))
        assert (response.status_code, response.json()["results"]) == (200, ["credited"])

    async def test_a_delivery_from_outside_the_source_networks_is_refused(
        self, shop: _Shop
    ) -> None:
        subject = shop.subject
        proof = subject.proof
        if subject.provider.webhook is None or not proof.source_networks:
            pytest.skip("the sender's address is not checked")
        assert subject.paid_delivery is not None
        checkout = await shop.checkout()
        intent = checkout.payment
        headers, body = await subject.paid_delivery(
            checkout, amount_minor=intent.amount_minor, currency=intent.currency
        )
        others = {k: v for k, v in headers.items() if k.lower() != proof.source_header.lower()}
        senders = [*_outside(proof.source_networks), "", "not an address", "0" * 300]
        before = await shop.state()

        with capture_logs() as logs:
            for sender in senders:
                sent = {**others, proof.source_header: sender}
                response = await shop.post((sent, body), as_sent=True)
                assert response.status_code == 401, (sender, response.text)
            response = await shop.post((others, body), as_sent=True)
            assert response.status_code == 401, ("no address", response.text)

        assert shop.billing_asked == [], "billing was asked before the sender was checked"
        assert await shop.state() == before
        assert shop.alerts.alerts == []
        assert all(entry.get("log_level") in ("debug", "info", "warning") for entry in logs)
        # the address made the difference: from inside, the same delivery credits
        response = await shop.post((others, body))
        assert (response.status_code, response.json()["results"]) == (200, ["credited"])

    async def test_a_provider_name_we_do_not_have_is_a_404(self, shop: _Shop) -> None:
        before = await shop.state()
        for name in ("nope", shop.name + "x", "..%2fstars"):
            response = await shop.post(({}, b"{}"), name=name)
            assert response.status_code == 404, (name, response.status_code)
        assert shop.billing_asked == [] and shop.alerts.alerts == []
        assert await shop.state() == before

    # -- authentic payments through the provider's own door -----------------------------

    async def test_a_payment_is_credited_once_and_its_replay_is_a_logged_skip(
        self, shop: _Shop
    ) -> None:
        checkout = await shop.checkout()
        intent = checkout.payment
        deliver = await shop.pay(
            checkout, amount_minor=intent.amount_minor, currency=intent.currency
        )
        assert await deliver() is Verdict.CREDITED
        credited = await shop.state()
        (payment,) = [p for p in credited["payments"] if str(p["id"]) == intent.id]
        assert payment["status"] == "finalized"

        with capture_logs() as logs:
            assert await deliver() is Verdict.DUPLICATE
            assert await deliver() is Verdict.DUPLICATE

        assert await shop.state() == credited
        skips = [e for e in logs if e.get("outcome") == "skipped" and e.get("verdict")]
        assert len(skips) == 2, logs
        assert shop.alerts.alerts == []

    @pytest.mark.parametrize("tamper", ["amount", "currency"])
    async def test_a_tampered_payment_is_refused_recorded_and_alerted_once(
        self, shop: _Shop, tamper: str
    ) -> None:
        checkout = await shop.checkout()
        intent = checkout.payment
        amount, currency = intent.amount_minor, intent.currency
        if tamper == "amount":
            amount = max(1, amount // 2)
        else:
            currency = _other_currency(currency)
        deliver = await shop.pay(checkout, amount_minor=amount, currency=currency)

        assert await deliver() is Verdict.MISMATCH
        refused = await shop.state()
        assert await deliver() is Verdict.DUPLICATE  # the same refused charge again

        assert await shop.state() == refused
        assert all(p["status"] != "finalized" for p in refused["payments"])  # nothing credited
        assert refused["subscriptions"] == [] and refused["outbox"] == []
        # recorded to refund: as a payment of its own, or (when the charge is the intent's own
        # invoice) as the intent itself, paid and refused
        (recorded,) = [p for p in refused["payments"] if p["refused"] is not None]
        assert (recorded["refused"], recorded["status"]) == ("mismatch", "paid")
        assert intent.id in (str(recorded["id"]), str(recorded["paid_for"]))
        (alert,) = shop.alerts.alerts
        assert alert.severity is Severity.CRITICAL
        assert alert.key == f"payment_mismatch:{shop.name}:{intent.id}"
        assert recorded["external_id"] not in alert.key

    async def test_a_payer_who_is_not_the_owner_gets_nothing_credited(self, shop: _Shop) -> None:
        if not isinstance(shop.subject.provider, TelegramPaymentProvider):
            pytest.skip("the peer does not say who paid")
        checkout = await shop.checkout()
        intent = checkout.payment
        deliver = await shop.pay(
            checkout, amount_minor=intent.amount_minor, currency=intent.currency, payer=STRANGER
        )

        assert await deliver() is Verdict.FOREIGN_PAYER
        refused = await shop.state()
        assert await deliver() is Verdict.DUPLICATE

        assert await shop.state() == refused
        assert refused["subscriptions"] == [] and refused["outbox"] == []
        (recorded,) = [p for p in refused["payments"] if p["refused"] is not None]
        assert (recorded["user_id"], recorded["refused"]) == (STRANGER, "foreign_payer")
        (alert,) = shop.alerts.alerts
        assert alert.key == f"payment_foreign_payer:{shop.name}:{intent.id}"

        # the owner can still pay their own invoice
        own = await shop.pay(checkout, amount_minor=intent.amount_minor, currency=intent.currency)
        assert await own() is Verdict.CREDITED
