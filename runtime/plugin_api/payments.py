"""The payment-provider extension point: what a provider is given and what it returns.

The core stores a payment *intent* before any provider call; its id travels through the
provider (Crypto Pay ``payload``, Telegram ``invoice_payload``) and comes back with the
confirmation, so a confirmation always finds its intent. Crediting is the core's job,
exactly once; a provider only creates invoices and turns the peer's proven word into
``ConfirmedPayment``s.

A payment is proven by the door it came through, and a provider says which doors it has:

- ``webhook``: a ``WebhookReceiver`` when the peer calls us over HTTP
  (``POST /webhooks/payments/<name>``), else None. The core runs ``authenticate`` on the
  raw request before anything reads the body, answers 401 when it fails and 404 for a
  provider without a receiver, without touching the database; only then is ``parse``
  given the delivery.
- Telegram's own payments (Stars, cards) have no HTTP door: the ``successful_payment``
  message is proven by the update that brought it (long polling, or the Telegram webhook
  with its secret token). Such a provider is a ``TelegramPaymentProvider``; only the
  bot's update path calls ``confirm_telegram_payment``, with the payer taken from the
  update.
- ``fetch_status`` asks the peer itself (polling, reconciliation).

Saved payment methods (auto-renewal by card) are an optional capability, a
``RecurringPaymentProvider``: an intent with ``save_method`` set (the user chose it) asks
the peer to save what the user pays with; a confirmation reports what was saved
(``ConfirmedPayment.saved_method``); ``charge_saved`` charges it later without the user,
idempotent by the key the core gives (one per subscription period).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from runtime.failures import DomainError


class WebhookRejected(DomainError):
    """A webhook delivery that is not from the peer (401) or not understood (400).

    Raised by ``WebhookReceiver.authenticate`` (status 401) and ``parse`` (status 400);
    nothing is changed and no alert is raised.
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class RefundNotSupported(DomainError):
    """The provider cannot refund through its API; refund by hand and record it."""


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """What the user is about to pay, stored before any provider call."""

    id: str
    """The intent id (a UUID): the provider's payload, so the confirmation finds it."""
    user_id: int
    amount_minor: int
    """Minor units (kopecks, cents); whole Stars for XTR; for crypto, the asset's smallest
    unit as the plan's price defines it."""
    currency: str
    purpose: str
    title: str
    description: str
    plan_id: str | None = None
    start_parameter: str = ""
    """The bot's ``/start`` parameter for a forwarded copy of an invoice sent in the chat
    (``sendInvoice`` ``start_parameter``: 1-64 of ``A-Z a-z 0-9 _ -``). With it, a
    forwarded invoice shows a link to the bot instead of a Pay button, so nobody else can
    pay it. In-chat providers must send it; the core always sets it."""
    save_method: bool = False
    """The user chose to save what they pay with for auto-renewal: a
    ``RecurringPaymentProvider`` asks its peer to save it; other providers ignore it."""


@dataclass(frozen=True, slots=True)
class Invoice:
    """What the provider created for an intent."""

    external_id: str | None
    """The provider's invoice id when it has one (Crypto Pay ``invoice_id``); None for
    Telegram invoices, whose charge id only exists once paid."""
    url: str | None
    """Where the user pays (Crypto Pay ``bot_invoice_url``, a Telegram invoice link), or
    None when the invoice is sent into the chat by the bot."""
    send_in_chat: dict[str, Any] | None = None
    """For Telegram invoices sent by the bot: the ``sendInvoice`` arguments, with the
    intent's ``start_parameter``."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SavedMethod:
    """A payment method the peer saved for charges without the user."""

    ref: str
    """The peer's id of the method (YooKassa ``payment_method.id``): what ``charge_saved``
    is given. At most 128 characters."""
    title: str
    """What the user recognises it by, e.g. ``"Bank card *4444"``. At most 64 characters."""


@dataclass(frozen=True, slots=True)
class ConfirmedPayment:
    """A payment the peer has proven paid. Amount and currency are as the peer reports them:
    the core compares them with the intent and refuses what differs."""

    provider: str
    external_id: str
    """Unique per provider: Telegram ``telegram_payment_charge_id``, Crypto Pay ``invoice_id``."""
    intent_id: str
    amount_minor: int
    currency: str
    paid_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    payer_id: int | None = None
    """The Telegram user who paid, when the peer says (Telegram payments: the sender of the
    ``successful_payment``, the user of a Star transaction). A payer who is not the intent's
    owner gets nothing credited: the charge is recorded against the payer, to refund."""
    saved_method: SavedMethod | None = None
    """The method this payment saved, as the peer reports it. The core keeps it only when
    the intent asked (``PaymentIntent.save_method``) and the payment is credited."""


@dataclass(frozen=True, slots=True)
class AuthenticatedDelivery:
    """A webhook request whose ``WebhookReceiver.authenticate`` passed, exactly as received."""

    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


@runtime_checkable
class WebhookReceiver(Protocol):
    """How a provider takes its peer's HTTP deliveries (``POST /webhooks/payments/<name>``).

    The core calls ``authenticate`` first, with the raw request, and reads nothing before
    it passes; then ``parse``. A delivery that fails ``authenticate`` is answered 401 and
    logged as a warning at most: it changes nothing and raises no alert. Keep
    ``authenticate`` cheap and bounded (a signature check); it must not touch the database.
    """

    authentication: str
    """How deliveries are proven, in words for the operator (``vpnbot plugins``), e.g.
    ``"HMAC-SHA-256 of the body, header crypto-pay-api-signature"``."""

    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookRejected`` unless the peer sent this (headers in lower case)."""
        ...

    async def parse(self, delivery: AuthenticatedDelivery) -> Sequence[ConfirmedPayment]:
        """The payments an authentic delivery confirms (an empty list for other updates).

        Bad values from the authenticated peer (an amount that is not a number) are
        ``WebhookRejected(status=400)`` or another ``DomainError``, never a crash.
        """
        ...


class InvoiceState(enum.StrEnum):
    ACTIVE = "active"
    PAID = "paid"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    external_id: str
    state: InvoiceState
    payment: ConfirmedPayment | None = None
    """Set when ``state`` is PAID."""


@runtime_checkable
class PaymentProvider(Protocol):
    """A way to take money. Every method raises ``DependencyError`` (transient or not) when
    the peer fails, and never puts a secret into an exception message."""

    name: str
    """Stable id stored with every payment: ``stars``, ``card``, ``cryptobot``..."""

    @property
    def webhook(self) -> WebhookReceiver | None:
        """The provider's HTTP door, or None when its peer never calls us (a plain
        attribute in an implementation: ``webhook = None``)."""
        ...

    async def create_invoice(self, intent: PaymentIntent) -> Invoice: ...

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """The state of open invoices, in as few peer calls as the API allows."""
        ...

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        """Give the money back to ``user_id`` (who paid), or raise ``RefundNotSupported``."""
        ...


@dataclass(frozen=True, slots=True)
class TelegramPayment:
    """A ``successful_payment`` as Telegram delivered it to the bot.

    Only the bot builds one, from an update Telegram delivered (polling, or the Telegram
    webhook with its secret token): that delivery is the proof. ``payer_id`` is the sender
    of the message.
    """

    payer_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    telegram_payment_charge_id: str
    provider_payment_charge_id: str = ""


@runtime_checkable
class TelegramPaymentProvider(PaymentProvider, Protocol):
    """A provider whose invoices are paid inside Telegram (Stars, cards): ``webhook`` is
    None, and the bot hands it each ``successful_payment`` in its currency."""

    currency: str
    """The one currency its invoices are in (``XTR`` for Stars)."""

    async def confirm_telegram_payment(self, payment: TelegramPayment) -> ConfirmedPayment:
        """The payment as the core credits it: this provider's name, the charge id, the
        intent id from the payload, amount and currency as paid, and the payer."""
        ...


class ChargeState(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    """Not decided yet: confirmed later through the webhook or ``fetch_status``, like any
    invoice of the provider."""
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SavedCharge:
    """What ``charge_saved`` did."""

    state: ChargeState
    external_id: str | None = None
    """The peer's id of the charge (the same for a repeated call with the same key)."""
    payment: ConfirmedPayment | None = None
    """Set when ``state`` is SUCCEEDED: the core credits it like any confirmation (amount
    and currency compared with the intent)."""
    reason: str = ""
    """FAILED: the peer's reason in its own words (``insufficient_funds``...), at most 64
    characters of ``a-z 0-9 _``; it goes into log lines, never into an alert key."""
    method_unusable: bool = False
    """FAILED: the method can never be charged again (the user revoked the permission, the
    card expired): the core forgets it."""


@runtime_checkable
class RecurringPaymentProvider(PaymentProvider, Protocol):
    """A provider that can save a payment method and charge it later without the user.

    ``charge_saved`` must be idempotent by ``key``: the core calls it again with the same
    key and the same intent after a crash or a timeout, and from several processes, and
    expects the first charge back, never a second one. It raises ``DependencyError``
    (transient: the core tries again later with the same key; permanent: the charge
    counts as failed) when the peer cannot answer.
    """

    saves_methods: bool
    """False turns the capability off (e.g. by configuration): no consent is offered."""

    async def charge_saved(
        self, method_ref: str, intent: PaymentIntent, *, key: str
    ) -> SavedCharge:
        """Charge ``intent`` (amount, currency, ``intent.id`` in the charge like an
        invoice's payload) to the saved method ``method_ref``; ``key`` is at most 64
        characters."""
        ...
