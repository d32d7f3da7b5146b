"""``[plugins.settings.cryptobot]``: the Crypto Pay app and how its invoices are made."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

NETWORK_URLS = {
    "mainnet": "https://pay.crypt.bot/api/",
    "testnet": "https://testnet-pay.crypt.bot/api/",
}
"""Crypto Pay's base URLs: @CryptoBot (mainnet) and @CryptoTestnetBot (testnet)."""

MAX_EXPIRES_IN = 2_678_400
"""Crypto Pay accepts ``expires_in`` from 1 second to 31 days."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


_Code = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,10}$")]


class CryptoBotSettings(BaseModel):
    """Every key but ``token`` has a default.

    ``currency_type = "fiat"`` prices invoices in the intent's fiat currency (RUB, USD...)
    and lets the user pay with any of ``accepted_assets`` (all the app accepts when
    empty); ``"crypto"`` prices them in the intent's currency as a crypto asset (USDT...).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    token: Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)] = Field(
        default=None, validate_default=True
    )
    """Required: the API token of the Crypto Pay app (@CryptoBot, Crypto Pay, My Apps)."""
    network: Literal["mainnet", "testnet"] = "mainnet"
    """``mainnet`` (@CryptoBot) or ``testnet`` (@CryptoTestnetBot, whose app has its own
    token)."""
    base_url: Annotated[str, AfterValidator(_http_url)] | None = None
    """Overrides the network's URL (a proxy, a fake in tests); ends with ``/api/``."""
    currency_type: Literal["fiat", "crypto"] = "fiat"
    """How plan prices are read: ``fiat`` (a fiat currency, paid in any accepted asset) or
    ``crypto`` (a crypto asset such as USDT, paid in that asset)."""
    accepted_assets: list[_Code] = Field(default_factory=list)
    """With ``fiat`` prices, the assets the user may pay with (``["USDT", "TON"]``); empty:
    every asset the app accepts."""
    invoice_expires_in_seconds: Annotated[int, Field(ge=1, le=MAX_EXPIRES_IN)] | None = None
    """How long an invoice can be paid; by default ``[billing] invoice_ttl_minutes``."""
    asset_decimals: dict[_Code, Annotated[int, Field(ge=0, le=18)]] = Field(default_factory=dict)
    """Minor units per crypto asset, for assets missing from the built-in table."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to the Crypto Pay API may take (> 0)."""

    @field_validator("token")
    @classmethod
    def _token_required(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            raise ValueError("is required: the Crypto Pay app's API token")
        return value

    def api_url(self) -> str:
        url = self.base_url or NETWORK_URLS[self.network]
        return url if url.endswith("/") else url + "/"

    def token_value(self) -> str:
        assert self.token is not None  # the validator requires it
        return self.token.get_secret_value()
