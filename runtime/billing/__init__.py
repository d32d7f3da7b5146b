"""Taking money: checkouts, crediting exactly once, webhooks, refunds (trio services)."""

from ._service import Billing, Checkout, ProviderUnavailable
from ._webhooks import payment_webhook_routes

__all__ = ["Billing", "Checkout", "ProviderUnavailable", "payment_webhook_routes"]
