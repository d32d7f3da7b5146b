"""Crypto Pay invoices as a ``PaymentProvider``.

- The intent id travels as the invoice ``payload`` and comes back with the payment.
  Crypto Pay has no idempotency key for invoices (nor a search by payload): the core
  stores the intent first, and a retried ``create_invoice`` makes a second invoice for the
  same intent. Each paid invoice is a payment of its own (unique invoice id); should both
  be paid, the second finds its intent already paid, which the core settles.
- Webhooks are trusted only when ``crypto-pay-api-signature`` is the hex HMAC-SHA-256 of
  the raw body, keyed with the SHA-256 digest of the app token. The body is verified as
  received, before it is parsed: a proxy that re-serialises JSON breaks the signature.
  ``update_id`` is documented as non-unique, so it is not used at all; the invoice id is
  the payment's identity.
- ``request_date`` is not checked: a replayed delivery is harmless (the invoice id dedupes
  it) and Crypto Pay retries a delivery for days.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import httpx

from runtime.failures import DependencyError, DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import (
    ConfirmedPayment,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    PaymentIntent,
    RefundNotSupported,
    WebhookRejected,
)

from .amounts import UnknownExponent, exponent, to_decimal_string, to_minor
from .client import CryptoPayClient

SIGNATURE_HEADER = "crypto-pay-api-signature"
GET_INVOICES_MAX = 1000
"""``getInvoices`` returns at most 1000 invoices per call (``count`` 1-1000)."""
DESCRIPTION_LIMIT = 1024

_STATES = {
    "active": InvoiceState.ACTIVE,
    "paid": InvoiceState.PAID,
    "expired": InvoiceState.EXPIRED,
}

_log = get_logger("cryptobot")


class _BadInvoice(ValueError):
    """A paid invoice from Crypto Pay that cannot be turned into a payment."""


class CryptoBotProvider:
    """Takes payments through Crypto Pay invoices (``name = "cryptobot"``)."""

    name = "cryptobot"

    def __init__(
        self,
        token: str,
        *,
        base_url: str,
        currency_type: Literal["fiat", "crypto"] = "fiat",
        accepted_assets: Sequence[str] = (),
        expires_in_seconds: int | None = 3600,
        asset_decimals: Mapping[str, int] | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url
        self._client = CryptoPayClient(
            base_url, token, timeout=timeout, transport=transport, verify=verify
        )
        self._webhook_key = hashlib.sha256(token.encode()).digest()
        self._crypto = currency_type == "crypto"
        self._accepted_assets = list(accepted_assets)
        self._expires_in = expires_in_seconds
        self._asset_decimals = dict(asset_decimals or {})

    def __repr__(self) -> str:
        return f"CryptoBotProvider(currency_type={'crypto' if self._crypto else 'fiat'!r})"

    def exponent(self, currency: str) -> int:
        """Minor units of ``currency`` (see ``amounts``); ``UnknownExponent`` if none."""
        return exponent(currency, crypto=self._crypto, asset_decimals=self._asset_decimals)

    # -- invoices ---------------------------------------------------------------------

    async def create_invoice(self, intent: PaymentIntent) -> Invoice:
        if intent.amount_minor <= 0:
            raise DomainError(f"cryptobot: intent {intent.id} has no positive amount")
        try:
            places = self.exponent(intent.currency)
        except UnknownExponent as exc:
            raise DomainError(f"cryptobot: {exc}") from None
        params: dict[str, Any] = {
            "currency_type": "crypto" if self._crypto else "fiat",
            "amount": to_decimal_string(intent.amount_minor, places, keep_zeros=not self._crypto),
            "payload": intent.id,
            "description": (intent.description or intent.title)[:DESCRIPTION_LIMIT],
        }
        if self._crypto:
            params["asset"] = intent.currency
        else:
            params["fiat"] = intent.currency
            if self._accepted_assets:
                params["accepted_assets"] = ",".join(self._accepted_assets)
        if self._expires_in is not None:
            params["expires_in"] = self._expires_in
        result = await self._client.call("createInvoice", params)
        if not isinstance(result, Mapping) or "invoice_id" not in result:
            raise DependencyError(
                "cryptobot: createInvoice answered without an invoice id", transient=False
            )
        url = result.get("bot_invoice_url") or result.get("pay_url")
        invoice_id = str(result["invoice_id"])
        _log.info(
            "invoice created",
            operation="create_invoice",
            intent_id=intent.id,
            invoice_id=invoice_id,
            outcome="success",
        )
        return Invoice(
            external_id=invoice_id,
            url=str(url) if url else None,
            expires_at=_parse_time(result.get("expiration_date")),
        )

    async def fetch_status(self, external_ids: Sequence[str]) -> Sequence[InvoiceStatus]:
        """One ``getInvoices`` call per 1000 invoices; unknown ids are left out."""
        statuses: list[InvoiceStatus] = []
        for batch in _batches(_numeric_ids(external_ids), GET_INVOICES_MAX):
            result = await self._client.call(
                "getInvoices", {"invoice_ids": ",".join(batch), "count": GET_INVOICES_MAX}
            )
            items = result.get("items") if isinstance(result, Mapping) else result
            if not isinstance(items, list):
                raise DependencyError("cryptobot: getInvoices answered without items")
            for item in items:
                status = self._status_of(item)
                if status is not None:
                    statuses.append(status)
        return statuses

    def _status_of(self, item: object) -> InvoiceStatus | None:
        if not isinstance(item, Mapping) or "invoice_id" not in item:
            return None
        state = _STATES.get(str(item.get("status")))
        if state is None:
            _log.warning("unknown invoice status", invoice_id=str(item["invoice_id"]))
            return None
        payment = None
        if state is InvoiceState.PAID:
            try:
                payment = self._payment_of(item)
            except _BadInvoice as exc:
                _log.warning("paid invoice not understood", error=str(exc), outcome="skipped")
            if payment is None:
                return None
        return InvoiceStatus(external_id=str(item["invoice_id"]), state=state, payment=payment)

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        raise RefundNotSupported(
            "cryptobot: Crypto Pay cannot refund an invoice; "
            "send the money back from the app by hand and record the refund"
        )

    # -- webhooks ---------------------------------------------------------------------

    async def parse_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> Sequence[ConfirmedPayment]:
        self.verify(headers, body)
        try:
            update = json.loads(body)
        except ValueError:
            raise WebhookRejected("cryptobot: webhook body is not JSON", status=400) from None
        if not isinstance(update, Mapping):
            raise WebhookRejected("cryptobot: webhook body is not an update", status=400)
        if update.get("update_type") != "invoice_paid":
            return []
        invoice = update.get("payload")
        if not isinstance(invoice, Mapping) or "invoice_id" not in invoice:
            raise WebhookRejected("cryptobot: invoice_paid update without an invoice", status=400)
        try:
            payment = self._payment_of(invoice)
        except _BadInvoice as exc:
            raise WebhookRejected(str(exc), status=400) from None
        return [] if payment is None else [payment]

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookRejected`` (401) unless the signature matches the raw body."""
        given = _header(headers, SIGNATURE_HEADER)
        if not given:
            raise WebhookRejected("cryptobot: webhook without a signature")
        expected = hmac.new(self._webhook_key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
            raise WebhookRejected("cryptobot: webhook signature does not match")

    def _payment_of(self, invoice: Mapping[str, Any]) -> ConfirmedPayment | None:
        """The payment of a paid invoice, or None (logged) when it is not one of ours.

        Raises ``_BadInvoice`` when the invoice lacks a currency or an amount we can read.
        """
        invoice_id = str(invoice["invoice_id"])
        intent_id = invoice.get("payload")
        if not isinstance(intent_id, str) or not intent_id:
            _log.warning(
                "paid invoice without an intent id: not made by this bot",
                invoice_id=invoice_id,
                outcome="skipped",
            )
            return None
        if invoice.get("status", "paid") != "paid":
            _log.warning(
                "invoice_paid update for an unpaid invoice",
                invoice_id=invoice_id,
                outcome="skipped",
            )
            return None
        crypto = invoice.get("currency_type") == "crypto"
        currency = invoice.get("asset") if crypto else invoice.get("fiat")
        if not isinstance(currency, str) or not currency:
            raise _BadInvoice(f"cryptobot: invoice {invoice_id} has no currency")
        try:
            places = exponent(currency, crypto=crypto, asset_decimals=self._asset_decimals)
        except UnknownExponent as exc:
            raise _BadInvoice(f"cryptobot: invoice {invoice_id}: {exc}") from None
        try:
            amount_minor = to_minor(invoice.get("amount"), places)
        except ValueError:
            raise _BadInvoice(f"cryptobot: invoice {invoice_id} has no valid amount") from None
        return ConfirmedPayment(
            provider=self.name,
            external_id=invoice_id,
            intent_id=intent_id,
            amount_minor=amount_minor,
            currency=currency,
            paid_at=_parse_time(invoice.get("paid_at")),
            raw=dict(invoice),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _numeric_ids(ids: Sequence[str]) -> list[str]:
    """Unique, in order; ids that cannot be Crypto Pay invoice ids are left out (logged)."""
    seen: dict[str, None] = {}
    for raw in ids:
        value = str(raw).strip()
        if value.isdigit():
            seen.setdefault(value, None)
        else:
            _log.warning("not a Crypto Pay invoice id", external_id=value[:64], outcome="skipped")
    return list(seen)


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
