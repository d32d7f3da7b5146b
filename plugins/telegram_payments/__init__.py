"""Telegram payments: Stars (``stars``, XTR) and card payments (``card``).

Configured by ``[plugins.settings.telegram_payments]`` (see ``settings``); without that
table the plugin offers nothing. It uses the bot's token, ``[telegram] token``, which is
then required. Stars are on unless ``stars_enabled = false``; ``card`` exists once
``card_provider_token`` is set. Plan prices: ``{ stars = { XTR = 150 }, card = { RUB =
19900 } }`` (whole Stars; card amounts in minor units of ``card_currency``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from runtime.config import ConfigError, ConfigProblem, priced_items, validate_section
from runtime.plugin_api import Offer, OfferKind, PaymentProvider, hookimpl

from .client import BotApiPaymentsClient
from .provider import STARS, CardProvider, StarsProvider, clip
from .settings import TelegramPaymentsSettings

if TYPE_CHECKING:
    from runtime.config import Settings

__all__ = [
    "BotApiPaymentsClient",
    "CardProvider",
    "StarsProvider",
    "TelegramPaymentsSettings",
    "clip",
    "vpnbot_offers",
    "vpnbot_payment_providers",
]

PLUGIN = "telegram_payments"


def _price_problems(settings: Settings, provider: str, currency: str) -> list[ConfigProblem]:
    return [
        ConfigProblem(
            f"{where}.prices.{provider}.{code}", f"the {provider} provider takes {currency} only"
        )
        for where, prices in priced_items(settings)
        for code in prices.get(provider, {})
        if code != currency
    ]


@hookimpl
def vpnbot_payment_providers(settings: Settings) -> list[PaymentProvider]:
    table = settings.plugins.settings.get(PLUGIN)
    if table is None:
        return []
    config = validate_section(TelegramPaymentsSettings, table, path=f"plugins.settings.{PLUGIN}")
    token = settings.telegram.token.get_secret_value() if settings.telegram.token else ""
    problems = []
    if not token:
        problems.append(
            ConfigProblem("telegram.token", f"required when plugins.settings.{PLUGIN} is set")
        )
    card_token = config.card_provider_token
    if config.stars_enabled:
        problems.extend(_price_problems(settings, StarsProvider.name, STARS))
    if card_token is not None:
        problems.extend(_price_problems(settings, CardProvider.name, config.card_currency))
    if problems:
        raise ConfigError(problems)

    providers: list[PaymentProvider] = []
    if config.stars_enabled:
        client = BotApiPaymentsClient(
            token,
            api_base=config.bot_api_base or settings.telegram.api_base,
            timeout=config.timeout_seconds,
        )
        lookback = timedelta(hours=config.stars_lookback_hours)
        providers.append(StarsProvider(client, lookback=lookback))
    if card_token is not None:
        providers.append(
            CardProvider(
                provider_token=card_token.get_secret_value(), currency=config.card_currency
            )
        )
    return providers


@hookimpl
def vpnbot_offers() -> list[Offer]:
    table = f"plugins.settings.{PLUGIN}"
    return [
        Offer(
            OfferKind.PAYMENT_PROVIDER,
            StarsProvider.name,
            table,
            settings_model=f"{__name__}.settings:TelegramPaymentsSettings",
        ),
        Offer(OfferKind.PAYMENT_PROVIDER, CardProvider.name, f"{table}.card_provider_token"),
    ]
