"""Heleket crypto payments: the ``heleket`` provider.

Configured by ``[plugins.settings.heleket]`` (see ``settings.HeleketSettings``); without
that table the plugin offers nothing.

What this relies on, from Heleket's public API documentation (doc.heleket.com: "Request
format", "Creating an invoice", "Payment information", "Webhook", "Payment statuses",
"Refund"; the API is the Cryptomus merchant API, doc.cryptomus.com):

- ``POST https://api.heleket.com/v1/payment`` (``amount`` as a decimal string,
  ``currency``, ``order_id``, ``url_callback``, ``lifetime`` 300-43200 s) answers
  ``{"state": 0, "result": {"uuid", "order_id", "url", "expired_at", "status", ...}}``;
  ``POST /v1/payment/info`` with ``uuid`` or ``order_id`` answers the same record;
- every request carries the headers ``merchant`` (uuid) and ``sign`` =
  ``md5(base64(body) + api_key)``;
- a webhook is the payment record plus ``sign``: md5 of base64 of the record without
  ``sign`` encoded by PHP's ``json_encode`` (slashes escaped ``\\/``) + api_key;
- statuses ``paid``, ``paid_over`` (paid), ``wrong_amount`` (part-paid, final),
  ``wrong_amount_waiting``, ``check``, ``process``, ``confirm_check`` (open), ``cancel``,
  ``fail``, ``system_fail`` (never paid), ``refund_*``;
- ``/v1/payment/refund`` needs a wallet ``address`` to send the coins to.

Not from the documentation, modelled: the error envelope's HTTP statuses, and that a
second ``/v1/payment`` with an open invoice's ``order_id`` returns that invoice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, PaymentProvider, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .provider import HeleketProvider
    from .settings import HeleketSettings

__all__ = [
    "HeleketProvider",
    "HeleketSettings",
    "build_provider",
    "vpnbot_offers",
    "vpnbot_payment_providers",
]

PLUGIN = "heleket"

_LAZY = {"HeleketProvider": ".provider", "HeleketSettings": ".settings"}

__getattr__ = lazy_exports(__name__, _LAZY)


def build_provider(config: HeleketSettings) -> HeleketProvider:
    from .provider import HeleketProvider

    return HeleketProvider(
        config.merchant,
        config.api_key.get_secret_value(),
        base_url=config.api_url(),
        callback_url=config.callback_url,
        return_url=config.return_url,
        lifetime_seconds=config.lifetime_seconds,
        asset_decimals=config.asset_decimals,
        allowed_ips=config.allowed_ips,
        source_ip_header=config.source_ip_header,
        timeout=config.timeout_seconds,
    )


@hookimpl
def vpnbot_payment_providers(settings: Settings) -> list[PaymentProvider]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    from .settings import HeleketSettings

    config = validate_section(HeleketSettings, table, path=f"plugins.settings.{PLUGIN}")
    return [build_provider(config)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [Offer(OfferKind.PAYMENT_PROVIDER, PLUGIN, f"plugins.settings.{PLUGIN}")]
