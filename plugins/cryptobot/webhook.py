"""Crypto Pay's webhook: the ``invoice_paid`` deliveries, proven by their signature.

A delivery is trusted only when ``crypto-pay-api-signature`` is the hex HMAC-SHA-256 of the
raw body, keyed with the SHA-256 digest of the app token. The core checks it
(``authenticate``) before anything reads the body: a proxy that re-serialises JSON breaks
the signature. ``update_id`` is documented as non-unique, so it is not used at all; the
invoice id is the payment's identity. ``request_date`` is not checked: a replayed delivery
is harmless (the invoice id dedupes it) and Crypto Pay retries a delivery for days.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

from runtime.plugin_api.payments import AuthenticatedDelivery, ConfirmedPayment, WebhookRejected

from .invoices import BadInvoice, payment_of

SIGNATURE_HEADER = "crypto-pay-api-signature"


class CryptoPayWebhook:
    """The ``WebhookReceiver`` of the ``cryptobot`` provider."""

    authentication = f"HMAC-SHA-256 of the raw body keyed with the app token ({SIGNATURE_HEADER})"

    def __init__(self, token: str, *, asset_decimals: Mapping[str, int]) -> None:
        self._key = hashlib.sha256(token.encode()).digest()
        self._asset_decimals = dict(asset_decimals)

    def __repr__(self) -> str:
        return "CryptoPayWebhook()"

    async def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise ``WebhookRejected`` (401) unless the signature matches the raw body."""
        given = _header(headers, SIGNATURE_HEADER)
        if not given:
            raise WebhookRejected("cryptobot: webhook without a signature")
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
            raise WebhookRejected("cryptobot: webhook signature does not match")

    async def parse(self, delivery: AuthenticatedDelivery) -> Sequence[ConfirmedPayment]:
        try:
            update = json.loads(delivery.body)
        except (ValueError, RecursionError):
            raise WebhookRejected("cryptobot: webhook body is not JSON", status=400) from None
        if not isinstance(update, Mapping):
            raise WebhookRejected("cryptobot: webhook body is not an update", status=400)
        if update.get("update_type") != "invoice_paid":
            return []
        invoice = update.get("payload")
        if not isinstance(invoice, Mapping) or "invoice_id" not in invoice:
            raise WebhookRejected("cryptobot: invoice_paid update without an invoice", status=400)
        try:
            payment = payment_of(invoice, asset_decimals=self._asset_decimals)
        except BadInvoice as exc:
            raise WebhookRejected(str(exc), status=400) from None
        return [] if payment is None else [payment]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value
