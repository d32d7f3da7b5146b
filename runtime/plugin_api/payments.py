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
