"""The payment-provider extension point: what a provider is given and what it returns.

The core stores a payment *intent* before any provider call; its id travels through the
provider (Crypto Pay ``payload``, Telegram ``invoice_payload``) and comes back with the
confirmation, so a confirmation always finds its intent. Crediting is the core's job,
exactly once; a provider only creates invoices and turns the peer's words into
``ConfirmedPayment``s it has verified.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from runtime.failures import DomainError


class WebhookRejected(DomainError):
    """A webhook that is not from the peer (bad signature) or not understood. Answer 401/400."""

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
    """For Telegram invoices sent by the bot: the ``sendInvoice`` arguments."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConfirmedPayment:
    """A payment the provider has verified as paid. Amounts are as the peer reports them."""

    provider: str
    external_id: str
    """Unique per provider: Telegram ``telegram_payment_charge_id``, Crypto Pay ``invoice_id``."""
    intent_id: str
    amount_minor: int
    currency: str
    paid_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


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

    async def create_invoice(self, intent: PaymentIntent) -> Invoice: ...

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ConfirmedPayment]:
        """Verify and parse a webhook delivery; raise ``WebhookRejected`` when forged.

        Deliveries that are not payments (other update types) return an empty list.
        """
        ...

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """The state of open invoices, in as few peer calls as the API allows."""
        ...

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        """Give the money back, or raise ``RefundNotSupported``."""
        ...
