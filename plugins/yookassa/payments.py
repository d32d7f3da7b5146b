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
from runtime.plugin_api.payments import ConfirmedPayment

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
    )


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
