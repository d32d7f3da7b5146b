"""``[plugins.settings.heleket]``: the Heleket merchant and how its invoices are made."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from .currencies import DEFAULT_FIAT

API_URL = "https://api.heleket.com/"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


_Url = Annotated[str, AfterValidator(_http_url)]
_Code = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,10}$")]
_Fiat = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class HeleketSettings(BaseModel):
    """``merchant`` and ``api_key`` are required; every other key has a default.

    Plan prices for it are in minor units of the currency: a fiat currency's cents
    (``{ heleket = { USD = 500 } }``) or a coin's smallest unit (``{ heleket = { USDT =
    5000000 } }``).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    merchant: Annotated[str, Field(min_length=1, max_length=64)]
    """The merchant's uuid (Business, Merchants, merchant settings)."""
    api_key: SecretStr
    """The payment API key (not the payout key)."""
    base_url: _Url = API_URL
    """Overrides Heleket's API URL (a proxy, a fake in tests)."""
    callback_url: _Url | None = None
    """Where Heleket sends webhooks: this bot's ``/webhooks/payments/heleket`` as the
    internet reaches it. Without it, only the payment watcher notices payments."""
    return_url: _Url | None = None
    """Where the payment page sends the payer back (the bot's t.me link)."""
    lifetime_seconds: Annotated[int, Field(ge=300, le=43_200)] = 3600
    """How long an invoice can be paid (Heleket accepts 300 to 43200)."""
    asset_decimals: dict[_Code, Annotated[int, Field(ge=0, le=18)]] = Field(default_factory=dict)
    """Minor units per coin, for coins missing from the built-in table (``currencies``):
    declaring a coin here also lets plans be priced in it."""
    fiat_currencies: list[_Fiat] = Field(default_factory=lambda: list(DEFAULT_FIAT))
    """Fiat currencies (ISO 4217 codes) plans may price Heleket invoices in; Heleket
    converts them to the coin the payer picks. A plan priced in another is refused at
    start."""
    allowed_ips: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)
    """When set, webhooks are taken only from these addresses or networks."""
    source_ip_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "x-real-ip"
    """The header the reverse proxy puts the sender's address in (for ``allowed_ips``); of
    a list (``X-Forwarded-For``) the last address counts, the one the proxy itself added."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to Heleket's API may take (> 0)."""

    @field_validator("api_key")
    @classmethod
    def _key_required(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("is required: the merchant's payment API key")
        return value

    def api_url(self) -> str:
        return self.base_url if self.base_url.endswith("/") else self.base_url + "/"
