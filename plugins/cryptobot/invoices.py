"""A Crypto Pay invoice, as Crypto Pay reports it, turned into the payment the core credits.

Used for both doors: the signed ``invoice_paid`` webhook and ``getInvoices`` polling. Every
value comes from the peer: a value we cannot read (no currency, an amount that is not a
finite positive number in range) is a ``BadInvoice`` (a domain error), never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from runtime.failures import DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import ConfirmedPayment

from .amounts import UnknownExponent, exponent, to_minor

PROVIDER = "cryptobot"

_log = get_logger("cryptobot")


class BadInvoice(DomainError):
    """A paid invoice from Crypto Pay that cannot be turned into a payment."""


def payment_of(
    invoice: Mapping[str, Any], *, asset_decimals: Mapping[str, int]
) -> ConfirmedPayment | None:
    """The payment of a paid invoice, or None (logged) when it is not one of ours.

    Raises ``BadInvoice`` when the invoice lacks a currency or an amount we can read.
    """
    invoice_id = invoice_id_of(invoice)
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
            "invoice_paid update for an unpaid invoice", invoice_id=invoice_id, outcome="skipped"
        )
        return None
    crypto = invoice.get("currency_type") == "crypto"
    currency = invoice.get("asset") if crypto else invoice.get("fiat")
    if not isinstance(currency, str) or not currency:
        raise BadInvoice(f"cryptobot: invoice {invoice_id} has no currency")
    try:
        places = exponent(currency, crypto=crypto, asset_decimals=asset_decimals)
    except UnknownExponent as exc:
        raise BadInvoice(f"cryptobot: invoice {invoice_id}: {exc}") from None
    try:
        amount_minor = to_minor(invoice.get("amount"), places)
    except ValueError:
        raise BadInvoice(f"cryptobot: invoice {invoice_id} has no valid amount") from None
    if amount_minor <= 0:
        raise BadInvoice(f"cryptobot: invoice {invoice_id} has no positive amount")
    return ConfirmedPayment(
        provider=PROVIDER,
        external_id=invoice_id,
        intent_id=intent_id,
        amount_minor=amount_minor,
        currency=currency,
        paid_at=parse_time(invoice.get("paid_at")),
        raw=dict(invoice),
    )


def invoice_id_of(invoice: Mapping[str, Any]) -> str:
    """The invoice id as text, bounded: it is the peer's and ends up in logs and rows."""
    return str(invoice.get("invoice_id"))[:64]


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
