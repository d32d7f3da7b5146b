"""``[plugins.settings.yookassa]``: the YooKassa shop and how its payments are made."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

API_URL = "https://api.yookassa.ru/v3/"

NOTIFICATION_NETWORKS = (
    "185.71.76.0/27",
    "185.71.77.0/27",
    "77.75.153.0/25",
    "77.75.156.11/32",
    "77.75.156.35/32",
    "77.75.154.128/25",
    "2a02:5180::/32",
)
"""The addresses YooKassa sends notifications from, as published in its documentation and
listed by its own SDK (``yookassa-sdk-python``, ``SecurityHelper.YOOKASSA_NETWORKS``)."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _networks(value: list[str]) -> list[str]:
    for item in value:
        ipaddress.ip_network(item, strict=False)  # ValueError names the bad one
    return value


class YooKassaReceipt(BaseModel):
    """A 54-FZ receipt sent with each payment; set it when the shop must send receipts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    vat_code: Annotated[int, Field(ge=1, le=12)]
    """YooKassa's ``vat_code`` of the item (1: no VAT, 2: 0%, 4: 20%...)."""
    tax_system_code: Annotated[int, Field(ge=1, le=6)] | None = None
    """YooKassa's ``tax_system_code`` of the shop (1 to 6); unset when YooKassa knows it."""
    payment_subject: str = "service"
    """YooKassa's ``payment_subject`` of the item (``service``, ``commodity``...)."""
    payment_mode: str = "full_payment"
    """YooKassa's ``payment_mode`` of the item (``full_payment``, ``full_prepayment``...)."""
    customer_email: Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[^@\s]+@[^@\s]+$")]
    """The receipt's contact: the bot does not ask users for one, so the shop's own."""


class YooKassaSettings(BaseModel):
    """``shop_id`` and ``secret_key`` are required; the rest has defaults.

    Notifications are not signed by YooKassa: each one is checked by fetching the payment
    back from the API. With ``client_ip_header`` set (the header the reverse proxy in front
    of the bot writes the caller's address into, e.g. ``x-real-ip``), notifications from
    outside ``notification_networks`` are refused before that. Subscribe the shop's HTTP
    notifications to ``payment.succeeded`` and ``payment.canceled`` only, at
    ``https://<public host>/webhooks/payments/yookassa``: other events are answered 401,
    and YooKassa would send them again for a day.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    shop_id: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]
    """The shop's id (shopId, digits), from the YooKassa dashboard."""
    secret_key: SecretStr
    """The shop's secret key for the API (``live_...``, or ``test_...`` for a test shop)."""
    base_url: Annotated[str, AfterValidator(_http_url)] = API_URL
    """Overrides the API's URL (a proxy, a fake in tests); ends with ``/v3/``."""
    return_url: Annotated[str, AfterValidator(_http_url)] = "https://t.me/"
    """Where YooKassa sends the user after paying (the bot's ``https://t.me/<bot>`` link)."""
    receipt: YooKassaReceipt | None = None
    """A 54-FZ receipt sent with each payment; set it when the shop must send receipts."""
    client_ip_header: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")] | None = None
    """The header (lower case) the reverse proxy writes the caller's address into, e.g.
    ``x-real-ip``: notifications from outside ``notification_networks`` are then refused
    before the payment is fetched back. Unset: every notification is fetched back."""
    notification_networks: Annotated[list[str], AfterValidator(_networks)] = Field(
        default_factory=lambda: list(NOTIFICATION_NETWORKS)
    )
    """The networks YooKassa sends notifications from (with ``client_ip_header``); by
    default the ones YooKassa publishes."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to the API may take (> 0)."""
    payment_method: Literal["any", "bank_card", "sbp", "yoo_money"] = "any"
    """Asks for one payment method (``payment_method_data.type``); ``any`` lets the user pick."""
    saved_methods: bool = False
    """Offers users to save their card for auto-renewal (YooKassa's autopayments, which
    YooKassa enables per shop: ask your manager first). Renewals then charge the saved
    card, falling back to the balance."""

    def api_url(self) -> str:
        return self.base_url if self.base_url.endswith("/") else self.base_url + "/"
