"""Taking money: checkouts, crediting exactly once, payment webhooks, refunds (trio services)."""

from ._service import (
    PLANS_START_PARAMETER,
    TOPUP_START_PARAMETER,
    BalanceOffer,
    Billing,
    Checkout,
    ProviderUnavailable,
    refusal_alert,
)
from ._webhooks import payment_webhook_routes

__all__ = [
    "PLANS_START_PARAMETER",
    "TOPUP_START_PARAMETER",
    "BalanceOffer",
    "Billing",
    "Checkout",
    "ProviderUnavailable",
    "payment_webhook_routes",
    "refusal_alert",
]
