"""Heleket payment records (``/v1/payment/info`` results) as the core's invoice states.

- ``paid`` and ``paid_over``: paid; the intent's invoice amount is credited (an
  overpayment stays on the merchant's Heleket balance);
- ``wrong_amount`` (final: the payer sent less, or the invoice expired part-paid): the
  paid amount in the invoice's currency is reported, so the core refuses it as a
  mismatch, records it to refund and alerts, unless it covers the invoice;
- ``cancel``, ``fail``, ``system_fail``: expired (never payable again);
- ``check``, ``process``, ``confirm_check``, ``wrong_amount_waiting`` (the payer may
  still add the rest) and anything else: still open;
- ``refund_*``: after a refund; left out (the refund is recorded by the core).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from plugins.cryptobot.amounts import MAX_MINOR, to_minor
from runtime.plugin_api.payments import ConfirmedPayment, InvoiceState, InvoiceStatus

from .currencies import COINS

PROVIDER = "heleket"

PAID = frozenset({"paid", "paid_over"})
PARTIAL = "wrong_amount"
EXPIRED = frozenset({"cancel", "fail", "system_fail"})
REFUNDS = frozenset({"refund_process", "refund_fail", "refund_paid"})
_FIAT_PLACES = {"JPY": 0, "KRW": 0, "VND": 0}


class BadPayment(ValueError):
    """A payment record we cannot read (missing ids, an unreadable amount)."""


def exponent(currency: str, asset_decimals: Mapping[str, int]) -> int:
    """Minor units of ``currency``: a coin's smallest unit (``asset_decimals`` first, then
    the coins Heleket takes), else a fiat currency's ISO exponent."""
    if currency in asset_decimals:
        return asset_decimals[currency]
    if currency in COINS:
        return COINS[currency]
    return _FIAT_PLACES.get(currency, 2)


def status_of(
    info: Mapping[str, Any], *, asset_decimals: Mapping[str, int]
) -> InvoiceStatus | None:
    """The record's state; None when it is a refund state or not one of our invoices.
    ``BadPayment`` when a paid record cannot be read."""
    status = str(info.get("status"))[:32]
    invoice_id = str(info.get("uuid") or "")[:64]
    if not invoice_id or status in REFUNDS:
        return None
    if status in EXPIRED:
        return InvoiceStatus(invoice_id, InvoiceState.EXPIRED)
    if status not in PAID and status != PARTIAL:
        return InvoiceStatus(invoice_id, InvoiceState.ACTIVE)
    return InvoiceStatus(
        invoice_id, InvoiceState.PAID, payment_of(info, asset_decimals=asset_decimals)
    )


def payment_of(info: Mapping[str, Any], *, asset_decimals: Mapping[str, int]) -> ConfirmedPayment:
    invoice_id = str(info.get("uuid") or "")[:64]
    intent_id = info.get("order_id")
    currency = info.get("currency")
    if not invoice_id or not isinstance(intent_id, str) or not intent_id:
        raise BadPayment(f"heleket: payment {invoice_id!r} has no order id")
    if not isinstance(currency, str) or not 2 <= len(currency) <= 10:
        raise BadPayment(f"heleket: payment {invoice_id} has no currency")
    places = exponent(currency, asset_decimals)
    try:
        invoiced = to_minor(info.get("amount"), places)
    except ValueError:
        raise BadPayment(f"heleket: payment {invoice_id} has no valid amount") from None
    if invoiced <= 0:
        raise BadPayment(f"heleket: payment {invoice_id} has no positive amount")
    amount = invoiced
    if info.get("status") == PARTIAL:
        amount = min(invoiced, _paid_in_invoice_currency(info, invoiced, places))
    return ConfirmedPayment(
        provider=PROVIDER,
        external_id=invoice_id,
        intent_id=intent_id[:64],
        amount_minor=amount,
        currency=currency,
        raw={key: info.get(key) for key in _RAW if key in info},
    )


_RAW = ("status", "amount", "payment_amount", "payer_amount", "payer_currency", "network")


def _paid_in_invoice_currency(info: Mapping[str, Any], invoiced: int, places: int) -> int:
    """What a part-paid invoice got, in its own currency's minor units, rounded down: the
    paid amount itself when the payer paid in that currency, else the invoice's amount
    scaled by paid / asked in the payer's currency."""
    paid, asked = _decimal(info.get("payment_amount")), _decimal(info.get("payer_amount"))
    if paid is None:
        raise BadPayment("heleket: a part-paid payment without payment_amount")
    if info.get("payer_currency") in (None, info.get("currency")):
        scaled = paid.scaleb(places)
    elif asked is None or asked <= 0:
        raise BadPayment("heleket: a part-paid payment without payer_amount")
    else:
        scaled = Decimal(invoiced) * paid / asked
    if scaled > MAX_MINOR:
        raise BadPayment("heleket: paid amount out of range")
    return int(scaled.quantize(Decimal(1), rounding=ROUND_DOWN))


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if len(text) > 100:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None
