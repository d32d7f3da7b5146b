"""``[plugins.settings.telegram_payments]``: Telegram Stars and card payments.

Both use the bot's own token (``[telegram] token``). Stars need nothing else; card
payments need the payment provider token BotFather gives for the bot.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


def _not_stars(value: str) -> str:
    if value == "XTR":
        raise ValueError('must be a card currency; Stars ("XTR") are the stars provider')
    return value


class TelegramPaymentsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    stars_enabled: bool = True
    """Whether the ``stars`` provider (Telegram Stars, XTR) exists."""
    card_provider_token: Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)] = None
    """From BotFather (Payments); when set, the ``card`` provider exists."""
    card_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_not_stars)] = "RUB"
    """The ISO 4217 code card prices are in (not XTR); the card provider takes no other."""
    bot_api_base: Annotated[str, AfterValidator(_http_url)] | None = None
    """Overrides ``[telegram] api_base`` for these calls (a local Bot API server, a fake)."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each Bot API call of these providers may take (> 0)."""
    stars_lookback_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 72.0
    """How far back the reconciliation reads the bot's Star transactions."""
