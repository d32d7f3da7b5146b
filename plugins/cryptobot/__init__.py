"""CryptoBot (Crypto Pay API) payments: the ``cryptobot`` provider.

Configured by ``[plugins.settings.cryptobot]`` (see ``settings.CryptoBotSettings``); without
that table the plugin offers nothing. Plan prices for it are in minor units of the
currency (see ``amounts``): ``prices = { cryptobot = { RUB = 19900 } }`` with
``currency_type = "fiat"``, ``{ cryptobot = { USDT = 5000000 } }`` with ``"crypto"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.config import ConfigError, ConfigProblem, priced_items, validate_section
from runtime.plugin_api import Offer, OfferKind, PaymentProvider, hookimpl, lazy_exports

if TYPE_CHECKING:
    from runtime.config import Settings

    from .provider import CryptoBotProvider
    from .settings import NETWORK_URLS, CryptoBotSettings

__all__ = [
    "NETWORK_URLS",
    "CryptoBotProvider",
    "CryptoBotSettings",
    "build_provider",
    "vpnbot_offers",
    "vpnbot_payment_providers",
]

PLUGIN = "cryptobot"

_LAZY = {
    "CryptoBotProvider": ".provider",
    "CryptoBotSettings": ".settings",
    "NETWORK_URLS": ".settings",
}
"""The provider, its client and models: imported when the plugin is configured."""


__getattr__ = lazy_exports(__name__, _LAZY)


def build_provider(config: CryptoBotSettings, *, default_expires_in: int) -> CryptoBotProvider:
    from .provider import CryptoBotProvider

    return CryptoBotProvider(
        config.token_value(),
        base_url=config.api_url(),
        currency_type=config.currency_type,
        accepted_assets=config.accepted_assets,
        expires_in_seconds=config.invoice_expires_in_seconds or default_expires_in,
        asset_decimals=config.asset_decimals,
        timeout=config.timeout_seconds,
    )


def _price_problems(settings: Settings, config: CryptoBotSettings) -> list[ConfigProblem]:
    """Plan prices this provider could not charge, found now rather than at a purchase."""
    from .amounts import ASSET_DECIMALS, UnknownExponent, exponent

    crypto = config.currency_type == "crypto"
    problems = []
    for where, prices in priced_items(settings):
        for currency in prices.get(PLUGIN, {}):
            path = f"{where}.prices.{PLUGIN}.{currency}"
            if not crypto and (currency in ASSET_DECIMALS or currency in config.asset_decimals):
                problems.append(
                    ConfigProblem(path, 'is a crypto asset but currency_type is "fiat"')
                )
                continue
            try:
                exponent(currency, crypto=crypto, asset_decimals=config.asset_decimals)
            except UnknownExponent as exc:
                problems.append(ConfigProblem(path, str(exc)))
    return problems


@hookimpl
def vpnbot_payment_providers(settings: Settings) -> list[PaymentProvider]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    from .settings import CryptoBotSettings

    config = validate_section(CryptoBotSettings, table, path=f"plugins.settings.{PLUGIN}")
    problems = _price_problems(settings, config)
    if problems:
        raise ConfigError(problems)
    ttl = settings.billing.invoice_ttl_minutes * 60
    return [build_provider(config, default_expires_in=min(ttl, 2_678_400))]


@hookimpl
def vpnbot_offers() -> list[Offer]:
    return [
        Offer(
            OfferKind.PAYMENT_PROVIDER,
            PLUGIN,
            f"plugins.settings.{PLUGIN}",
            settings_model=f"{__name__}.settings:CryptoBotSettings",
        )
    ]
