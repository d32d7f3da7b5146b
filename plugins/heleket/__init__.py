"""Heleket crypto payments: the ``heleket`` provider.

Configured by ``[plugins.settings.heleket]`` (see ``settings.HeleketSettings``); without
that table the plugin offers nothing. A plan priced for it in a currency it does not take
(a coin missing from ``currencies.COINS`` and ``asset_decimals``, or a fiat currency not in
``fiat_currencies``) is refused at start, naming the plan and the currency; what the list
of coins relies on is written in ``currencies``.

What this relies on. Read in Heleket's public documentation (doc.heleket.com, "Request
format" and "Webhook"): every request is a JSON ``POST`` to ``https://api.heleket.com/``
with the headers ``merchant`` (the merchant's uuid) and ``sign`` =
``md5(base64(body) + api_key)``; a webhook is POSTed to the invoice's ``url_callback`` and
carries ``type``, ``uuid``, ``order_id``, ``amount``, ``payment_amount``, ``currency``,
``payer_currency``, ``is_final``, ``status`` (``confirm_check``, ``paid``, ``paid_over``,
``fail``, ``wrong_amount``, ``cancel``, ``system_fail``, ``refund_process``,
``refund_fail``, ``refund_paid``) and ``sign``: md5 of base64 of the record without
``sign`` as PHP's ``json_encode`` writes it (slashes escaped ``\\/``) + api_key.

Taken from the Cryptomus merchant API, which Heleket's mirrors, and not checked against
Heleket's own pages: ``POST v1/payment`` (``amount`` as a decimal string, ``currency``,
``order_id``, ``url_callback``, ``lifetime`` 300-43200 s) answering ``{"state": 0,
"result": {"uuid", "url", "expired_at", ...}}``; ``POST v1/payment/info`` by ``uuid``;
the statuses ``check``, ``process`` and ``wrong_amount_waiting`` (still open);
``v1/payment/refund`` needing a wallet ``address``. Modelled only (the fake does it this
way): the refusals' HTTP statuses, and that a second ``v1/payment`` with an open
invoice's ``order_id`` returns that invoice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import ConfigError, validate_section
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
    from .currencies import price_problems

    problems = price_problems(
        settings.plans, asset_decimals=config.asset_decimals, fiat=config.fiat_currencies
    )
    if problems:
        raise ConfigError(problems)
    return [build_provider(config)]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.PAYMENT_PROVIDER,
            PLUGIN,
            f"plugins.settings.{PLUGIN}",
            settings_model=f"{__name__}.settings:HeleketSettings",
        )
    ]
