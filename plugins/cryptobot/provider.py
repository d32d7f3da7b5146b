"""Crypto Pay invoices as a ``PaymentProvider``.

- The intent id travels as the invoice ``payload`` and comes back with the payment.
  Crypto Pay has no idempotency key for invoices (nor a search by payload): the core
  stores the intent first, and a retried ``create_invoice`` makes a second invoice for the
  same intent. Each paid invoice is a payment of its own (unique invoice id); should both
  be paid, the second finds its intent already paid, which the core settles.
- Webhooks come through ``webhook`` (``CryptoPayWebhook``): signed by Crypto Pay, checked
  before anything reads them.
- Polling (``fetch_status``) reads invoices with ``getInvoices``; one invoice with values
  we cannot read is logged and left out, never failing the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
)

from .amounts import UnknownExponent, exponent, to_decimal_string
from .client import CryptoPayClient
from .invoices import BadInvoice, invoice_id_of, parse_time, payment_of
from .webhook import CryptoPayWebhook

GET_INVOICES_MAX = 1000
"""``getInvoices`` returns at most 1000 invoices per call (``count`` 1-1000)."""
DESCRIPTION_LIMIT = 1024

_STATES = {
    "active": InvoiceState.ACTIVE,
    "paid": InvoiceState.PAID,
    "expired": InvoiceState.EXPIRED,
}

_log = get_logger("cryptobot")


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
        self.webhook = CryptoPayWebhook(token, asset_decimals=asset_decimals or {})
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
            expires_at=parse_time(result.get("expiration_date")),
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
        """One invoice of a ``getInvoices`` answer; None (logged) when it cannot be read."""
        if not isinstance(item, Mapping) or "invoice_id" not in item:
            return None
        invoice_id = invoice_id_of(item)
        state = _STATES.get(str(item.get("status"))[:32])
        if state is None:
            _log.warning("unknown invoice status", invoice_id=invoice_id, outcome="skipped")
            return None
        payment = None
        if state is InvoiceState.PAID:
            try:
                payment = payment_of(item, asset_decimals=self._asset_decimals)
            except BadInvoice as exc:
                _log.warning(
                    "paid invoice not understood",
                    operation="payment_watch",
                    failure_type="domain_error",
                    error=str(exc),
                    outcome="skipped",
                )
            if payment is None:
                return None
        return InvoiceStatus(external_id=invoice_id, state=state, payment=payment)

    async def refund(self, payment: ConfirmedPayment, *, user_id: int) -> None:
        raise RefundNotSupported(
            "cryptobot: Crypto Pay cannot refund an invoice; "
            "send the money back from the app by hand and record the refund"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


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
