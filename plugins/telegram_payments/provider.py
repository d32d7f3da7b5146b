"""Telegram invoices as ``TelegramPaymentProvider``s: ``stars`` (XTR) and ``card``.

The bot sends the invoice into the chat (``Invoice.send_in_chat`` holds the ``sendInvoice``
arguments); the intent id is the invoice ``payload``, and ``start_parameter`` is always
set, so a forwarded copy links to the bot instead of offering to pay the same invoice.
Telegram's word that a payment happened is the ``successful_payment`` service message. It
carries no signature of its own: it is exactly as trustworthy as the update it came in
(long polling, or the Telegram webhook with its secret token). So these providers have no
HTTP door (``webhook = None``); the bot hands each ``successful_payment`` it received, with
its sender, to ``confirm_telegram_payment``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from runtime.failures import DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    PaymentIntent,
    RefundNotSupported,
    TelegramPayment,
)

from .client import BotApiPaymentsClient

STARS = "XTR"
TITLE_LIMIT = 32
DESCRIPTION_LIMIT = 255
PAYLOAD_LIMIT_BYTES = 128
DEFAULT_START_PARAMETER = "start"
"""Sent when an intent names no ``start_parameter``: a forwarded copy then opens the bot."""
_START_PARAMETER = re.compile(r"[A-Za-z0-9_-]{1,64}")

_log = get_logger("telegram_payments")


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut with an ellipsis when longer.

    Counted in UTF-16 code units, which is never fewer than characters, so the result
    fits however Telegram counts; the cut falls between characters and drops a dangling
    joiner, variation selector or combining mark.
    """
    text = text.strip()
    if _utf16_length(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for char in text:
        width = _utf16_length(char)
        if used + width > limit - 1:
            break
        kept.append(char)
        used += width
    while kept and (kept[-1] in "\u200d\ufe0e\ufe0f" or unicodedata.combining(kept[-1])):
        kept.pop()
    return "".join(kept).rstrip() + "…"


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class TelegramInvoiceProvider:
    """What Stars and card payments share: the invoice and its confirmation."""

    name: str
    currency: str
    webhook = None
    """No HTTP door: a payment is proven by the Telegram update that brought it."""

    def __init__(self, *, provider_token: str) -> None:
        self._provider_token = provider_token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(currency={self.currency!r})"

    async def create_invoice(self, intent: PaymentIntent) -> Invoice:
        """The ``sendInvoice`` arguments (without ``chat_id``): no call to Telegram."""
        if intent.currency != self.currency:
            raise DomainError(
                f"{self.name}: intent {intent.id} is in {intent.currency}, "
                f"this provider takes {self.currency}"
            )
        if intent.amount_minor <= 0:
            raise DomainError(f"{self.name}: intent {intent.id} has no positive amount")
        if not 1 <= len(intent.id.encode()) <= PAYLOAD_LIMIT_BYTES:
            raise DomainError(f"{self.name}: an intent id must fit the 128-byte payload")
        start_parameter = intent.start_parameter or DEFAULT_START_PARAMETER
        if not _START_PARAMETER.fullmatch(start_parameter):
            raise DomainError(f"{self.name}: {start_parameter[:80]!r} is not a start parameter")
        title = clip(intent.title, TITLE_LIMIT) or "VPN"
        description = clip(intent.description or intent.title, DESCRIPTION_LIMIT) or title
        return Invoice(
            external_id=None,
            url=None,
            send_in_chat={
                "title": title,
                "description": description,
                "payload": intent.id,
                "currency": self.currency,
                "prices": [{"label": title, "amount": intent.amount_minor}],
                "provider_token": self._provider_token,
                "start_parameter": start_parameter,
            },
        )

    async def confirm_telegram_payment(self, payment: TelegramPayment) -> ConfirmedPayment:
        """The charge as Telegram reported it, amount and currency included (the core refuses
        one that differs from its intent), with the user who paid."""
        return ConfirmedPayment(
            provider=self.name,
            external_id=payment.telegram_payment_charge_id,
            intent_id=payment.invoice_payload,
            amount_minor=payment.total_amount,
            currency=payment.currency,
            payer_id=payment.payer_id,
            raw={"provider_payment_charge_id": payment.provider_payment_charge_id},
        )


class StarsProvider(TelegramInvoiceProvider):
    """Telegram Stars (``XTR``): whole Stars, one price, no provider token."""

    name = "stars"
    currency = STARS

    def __init__(
        self, client: BotApiPaymentsClient, *, lookback: timedelta = timedelta(hours=72)
    ) -> None:
        super().__init__(provider_token="")
        self._client = client
        self._lookback = lookback

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        """``refundStarPayment``. Refunding twice fails (``CHARGE_ALREADY_REFUNDED``, a
        permanent ``DependencyError``): the caller records a refund once it succeeded."""
        if payment.provider != self.name:
            raise DomainError(f"stars: cannot refund a {payment.provider} payment")
        await self._client.refund_star_payment(user_id, payment.external_id)
        _log.info(
            "star payment refunded",
            operation="refund",
            charge_id=payment.external_id,
            intent_id=payment.intent_id,
            outcome="success",
        )

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """Star payments Telegram has seen for these ids: the backstop for a lost update.

        A Stars invoice has no id before it is paid, so ``external_ids`` may name intent
        ids (matched against the invoice payload) as well as charge ids. The answer has
        one ``PAID`` status per matching incoming payment, keyed by its charge id, with
        the payment (``raw["refunded"]`` tells whether it was refunded since). Ids
        without a payment are left out: Telegram keeps no state for unpaid invoices.
        Only transactions of the last ``lookback`` are read (``getStarTransactions``,
        newest pages first).
        """
        if not external_ids:
            return []
        wanted = set(external_ids)
        since = datetime.now(UTC) - self._lookback
        transactions = await self._client.recent_star_transactions(since)
        refunded = {t.get("id") for t in transactions if _is_invoice_partner(t.get("receiver"))}
        statuses: dict[str, InvoiceStatus] = {}
        for transaction in transactions:
            source = transaction.get("source")
            charge_id = transaction.get("id")
            if not _is_invoice_partner(source) or not isinstance(charge_id, str):
                continue
            intent_id = source.get("invoice_payload")
            if charge_id not in wanted and intent_id not in wanted:
                continue
            amount = transaction.get("amount")
            if not isinstance(intent_id, str) or not _is_int(amount):
                continue
            date = transaction.get("date")
            payment = ConfirmedPayment(
                provider=self.name,
                external_id=charge_id,
                intent_id=intent_id,
                amount_minor=amount,
                currency=STARS,
                paid_at=_timestamp(date),
                raw={"transaction": transaction, "refunded": charge_id in refunded},
                payer_id=_user_id(source),
            )
            statuses[charge_id] = InvoiceStatus(charge_id, InvoiceState.PAID, payment)
        return list(statuses.values())

    async def aclose(self) -> None:
        await self._client.aclose()


class CardProvider(TelegramInvoiceProvider):
    """Card payments through the payment provider connected in BotFather."""

    name = "card"

    def __init__(self, *, provider_token: str, currency: str) -> None:
        if not provider_token:
            raise ValueError("card payments need the provider token from BotFather")
        super().__init__(provider_token=provider_token)
        self.currency = currency

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """Always empty: the Bot API cannot list card payments or look one up, so the only
        record of a card payment is the ``successful_payment`` message itself."""
        return []

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        raise RefundNotSupported(
            "card: the Bot API cannot refund card payments; "
            "refund in the payment provider's dashboard and record it"
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _timestamp(value: object) -> datetime | None:
    if not _is_int(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _user_id(partner: Mapping[str, Any]) -> int | None:
    """The paying user of a transaction partner (``TransactionPartnerUser.user.id``)."""
    user = partner.get("user")
    user_id = user.get("id") if isinstance(user, Mapping) else None
    return user_id if _is_int(user_id) else None


def _is_invoice_partner(partner: object) -> TypeGuard[Mapping[str, Any]]:
    """A user paying (or refunded for) an invoice; older Bot APIs omit transaction_type."""
    return (
        isinstance(partner, Mapping)
        and partner.get("type") == "user"
        and partner.get("transaction_type", "invoice_payment") == "invoice_payment"
    )
