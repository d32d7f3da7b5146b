"""YooKassa payments (API v3): the ``yookassa`` provider.

Configured by ``[plugins.settings.yookassa]`` (see ``settings.YooKassaSettings``); without
that table the plugin offers nothing. Plan prices for it are in minor units of a fiat
currency: ``prices = { yookassa = { RUB = 19900 } }`` is sent as ``"199.00"``.

What this relies on, from YooKassa's public API v3 reference (yookassa.ru/developers) and
its official SDKs (``yoomoney/yookassa-sdk-python``, ``yookassa-sdk-php``):

- ``POST /v3/payments`` with HTTP Basic auth ``shopId:secretKey`` and an
  ``Idempotence-Key`` header (at most 64 characters): the same key with the same body
  returns the payment made first; ``amount {value: "199.00", currency}``, ``capture:
  true`` (no separate capture step), ``confirmation {type: redirect, return_url}``
  answered with ``confirmation.confirmation_url``, ``description`` (at most 128
  characters), ``metadata`` (string values), ``receipt`` for 54-FZ;
- ``GET /v3/payments/{id}``; statuses ``pending``, ``waiting_for_capture``,
  ``succeeded``, ``canceled``;
- notifications ``{"type": "notification", "event": "payment.succeeded", "object":
  <payment>}`` are not signed: YooKassa's documentation asks to check the object's status
  through the API, and publishes the networks they come from (the SDKs' SecurityHelper
  lists them, see ``settings.NOTIFICATION_NETWORKS``); a notification not answered 200 is
  sent again (for 24 hours);
- ``POST /v3/refunds`` with ``payment_id`` and ``amount``, also with an idempotence key;
- autopayments (YooKassa's "recurring payments", enabled per shop by YooKassa): a payment
  created with ``save_payment_method: true`` saves the method it is paid with when that
  method allows it (bank cards, YooMoney, SberPay, T-Pay, SBP with exceptions); the paid
  payment's ``payment_method`` then has ``saved: true``, its ``id`` (the method's id) and
  a ``title`` (a card's also ``card.last4``). A payment created with ``payment_method_id``
  and no ``confirmation`` charges the saved method without the user; with ``capture:
  true`` it comes back ``succeeded`` or ``canceled`` (``pending`` while a 54-FZ receipt
  is registered first). A canceled payment has ``cancellation_details {party, reason}``;
  ``permission_revoked`` means the user withdrew the permission for autopayments (and
  ``card_expired`` that the card ended): the method cannot be charged again. YooKassa
  leaves the schedule of charges and how users turn them off to the shop.

Not relied on: the ``payment_method.active`` event, the payment-methods API (saving
without a payment), deals and payouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import validate_section
from runtime.plugin_api import Offer, OfferKind, PaymentProvider, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .provider import YooKassaProvider
    from .settings import YooKassaSettings

__all__ = [
    "YooKassaProvider",
    "YooKassaSettings",
    "build_provider",
    "vpnbot_offers",
    "vpnbot_payment_providers",
]

PLUGIN = "yookassa"

_LAZY = {"YooKassaProvider": ".provider", "YooKassaSettings": ".settings"}

__getattr__ = lazy_exports(__name__, _LAZY)


def build_provider(config: YooKassaSettings) -> YooKassaProvider:
    from .provider import YooKassaProvider

    return YooKassaProvider(
        config.shop_id,
        config.secret_key.get_secret_value(),
        base_url=config.api_url(),
        return_url=config.return_url,
        receipt=config.receipt,
        payment_method=config.payment_method,
        client_ip_header=config.client_ip_header,
        networks=config.notification_networks,
        timeout=config.timeout_seconds,
        saved_methods=config.saved_methods,
    )


@hookimpl
def vpnbot_payment_providers(settings: Settings) -> list[PaymentProvider]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    from .settings import YooKassaSettings

    config = validate_section(YooKassaSettings, table, path=f"plugins.settings.{PLUGIN}")
    return [build_provider(config)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.PAYMENT_PROVIDER,
            PLUGIN,
            f"plugins.settings.{PLUGIN}",
            settings_model=f"{__name__}.settings:YooKassaSettings",
        )
    ]
