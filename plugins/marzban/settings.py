"""``[plugins.settings.marzban]``: where the panel is, how to log in, what users get."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

ProxyType = Literal["vless", "vmess", "trojan", "shadowsocks"]
ResetStrategy = Literal["no_reset", "day", "week", "month", "year"]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _all_vless() -> dict[ProxyType, list[str]]:
    return {"vless": []}


class MarzbanSettings(BaseModel):
    """The plugin's table, for example::

    [plugins.settings.marzban]
    base_url = "https://panel.example.com:8000"
    username = "bot"
    password = "..."           # or the credential file plugins.settings.marzban.password
    inbounds = { vless = [] }  # proxy type -> inbound tags; [] means every inbound of it
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    base_url: HttpUrl
    """The panel's address (its API lives under ``/api``)."""
    username: Annotated[str, Field(min_length=1)]
    """An admin of the panel; users are created under this admin."""
    password: SecretStr
    """That admin's password."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to the panel may take (> 0)."""
    inbounds: Annotated[dict[ProxyType, list[str]], Field(min_length=1)] = Field(
        default_factory=_all_vless
    )
    """Proxy types a new user gets, each with the inbound tags to use; an empty list means
    every inbound of that type."""
    proxy_settings: dict[ProxyType, dict[str, str]] = Field(default_factory=dict)
    """Extra settings per proxy type for new users, such as
    ``vless = { flow = "xtls-rprx-vision" }``."""
    data_limit_reset_strategy: ResetStrategy = "no_reset"
    """How often the panel itself resets a user's traffic: ``no_reset`` leaves it to the
    bot, which resets it at each paid period."""
    subscription_base_url: HttpUrl | None = None
    """What relative subscription URLs are appended to, path included (a panel without
    XRAY_SUBSCRIPTION_URL_PREFIX answers ``/sub/<token>``): ``https://example.com/panel``
    gives ``https://example.com/panel/sub/<token>``. Defaults to ``base_url``."""

    @model_validator(mode="after")
    def _proxy_settings_for_known_types(self) -> MarzbanSettings:
        unknown = sorted(set(self.proxy_settings) - set(self.inbounds))
        if unknown:
            raise ValueError(
                f"proxy_settings names proxy types not in inbounds: {', '.join(unknown)}"
            )
        return self
