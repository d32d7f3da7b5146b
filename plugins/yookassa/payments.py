"""A YooKassa payment object, as the API returns it, turned into what the core credits.

Only objects fetched from the API (``GET /v3/payments/{id}``, authenticated by our own
Basic auth over TLS) are turned into payments: a notification's body is never read for
amounts. Every value is still the peer's: one we cannot read is a ``BadPayment`` (a domain
error), never a crash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from plugins.cryptobot.amounts import exponent, to_minor
from runtime.failures import DomainError
from runtime.logs import get_logger
from runtime.plugin_api.payments import ConfirmedPayment, SavedMethod

PROVIDER = "yookassa"
INTENT_KEY = "intent_id"
"""The ``metadata`` key the intent id travels in."""

PAYMENT_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
"""YooKassa payment ids are UUID-like (``2419a771-000f-5000-9000-1edaf29243f2``)."""

_log = get_logger("yookassa")


class BadPayment(DomainError):
    """A payment from YooKassa that cannot be turned into a payment of ours."""


def valid_id(value: object) -> str | None:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if PAYMENT_ID.match(text) else None


def places(currency: str) -> int:
    return exponent(currency, crypto=False)


def payment_of(payment: Mapping[str, Any]) -> ConfirmedPayment | None:
    """The payment of a ``succeeded`` payment object, or None (logged) when it is not one
    of ours or not paid. Raises ``BadPayment`` when its amount cannot be read."""
    payment_id = valid_id(payment.get("id"))
    if payment_id is None:
        raise BadPayment("yookassa: a payment without a valid id")
    if payment.get("status") != "succeeded" or payment.get("paid") is False:
        return None
    metadata = payment.get("metadata")
    intent_id = metadata.get(INTENT_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(intent_id, str) or not intent_id or len(intent_id) > 64:
        _log.warning(
            "paid payment without an intent id: not made by this bot",
            payment_id=payment_id,
            outcome="skipped",
        )
        return None
    amount = payment.get("amount")
    if not isinstance(amount, Mapping):
        raise BadPayment(f"yookassa: payment {payment_id} has no amount")
    currency = amount.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise BadPayment(f"yookassa: payment {payment_id} has no currency")
    try:
        amount_minor = to_minor(amount.get("value"), places(currency))
    except ValueError:
        raise BadPayment(f"yookassa: payment {payment_id} has no valid amount") from None
    if amount_minor <= 0:
        raise BadPayment(f"yookassa: payment {payment_id} has no positive amount")
    return ConfirmedPayment(
        provider=PROVIDER,
        external_id=payment_id,
        intent_id=intent_id,
        amount_minor=amount_minor,
        currency=currency,
        paid_at=parse_time(payment.get("captured_at") or payment.get("created_at")),
        raw=dict(payment),
        saved_method=saved_method_of(payment),
    )


METHOD_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
REASON = re.compile(r"^[a-z0-9_]{1,64}$")
_TYPE_TITLES = {
    "bank_card": "Bank card",
    "yoo_money": "YooMoney",
    "sbp": "SBP",
    "sberbank": "SberPay",
    "tinkoff_bank": "T-Pay",
}


def saved_method_of(payment: Mapping[str, Any]) -> SavedMethod | None:
    """The method a paid payment saved (``payment_method.saved`` true, with an id), or None.

    The title is the peer's ``title`` when it has one, else built from the type and the
    card's ``last4`` ("Bank card *4444"); both are bounded and printable only."""
    method = payment.get("payment_method")
    if not isinstance(method, Mapping) or method.get("saved") is not True:
        return None
    ref = method.get("id")
    if not isinstance(ref, str) or not METHOD_ID.match(ref):
        return None
    title = method.get("title")
    if not isinstance(title, str) or not title.strip():
        kind = _TYPE_TITLES.get(str(method.get("type"))[:32], "Payment method")
        card = method.get("card")
        last4 = card.get("last4") if isinstance(card, Mapping) else None
        title = f"{kind} *{last4}" if isinstance(last4, str) and last4.isdigit() else kind
    printable = "".join(c for c in title if c.isprintable())[:64].strip()
    return SavedMethod(ref=ref, title=printable or "Payment method")


def cancellation_reason(payment: Mapping[str, Any]) -> str:
    """``cancellation_details.reason`` of a canceled payment, or ``unknown``: a peer's word,
    kept only when it looks like one of YooKassa's reason codes."""
    details = payment.get("cancellation_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    return reason if isinstance(reason, str) and REASON.match(reason) else "unknown"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
