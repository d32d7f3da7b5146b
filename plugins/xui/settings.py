"""``[plugins.settings.xui]``: one 3x-ui panel, how to log in to it, where clients go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment")
    return value if value.endswith("/") else value + "/"


def _existing_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError("must be the path of an existing file")
    return value


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


_Secret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]
_Url = Annotated[str, AfterValidator(_http_url)]


class XuiSettings(BaseModel):
    """Log in with ``username`` and ``password`` (any version) or with ``api_token``
    (3x-ui v3.0 and later), not both."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    base_url: _Url
    """The panel's address with its web base path: ``https://panel.example.com:2053/AbCd/``."""
    username: Annotated[str | None, BeforeValidator(_empty_is_unset)] = None
    """The panel's login, with ``password``."""
    password: _Secret = None
    """The panel's password, with ``username``."""
    api_token: _Secret = None
    """An API token of the panel (3x-ui v3.0 and later), instead of ``username`` and
    ``password``."""
    inbound_ids: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    """The inbounds every client is attached to; they share one subscription."""
    subscription_base_url: _Url
    """The subscription server's URL up to the subscription id:
    ``https://sub.example.com:2096/sub/``."""
    flow: Annotated[str, Field(max_length=64)] = ""
    """For VLESS clients, e.g. ``xtls-rprx-vision`` with Reality; empty: the panel's."""
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds each call to the panel may take (more than 0, at most 300)."""
    api: Literal["auto", "inbounds", "clients"] = "auto"
    """``inbounds``: v2.x and v3.0; ``clients``: v3.1 and later; ``auto`` detects it."""
    identity_secret: _Secret = None
    """Keys the client UUIDs and subscription ids derived from account names, so nobody
    can compute them; by default the login password or API token is used."""
    tls_ca_file: Annotated[str, AfterValidator(_existing_file)] | None = None
    """A CA bundle (or the panel's self-signed certificate) to verify the panel with."""

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> XuiSettings:
        cookie = self.username is not None or self.password is not None
        if self.api_token is not None and cookie:
            raise ValueError("set either username and password, or api_token, not both")
        if self.api_token is None and (self.username is None or self.password is None):
            raise ValueError("needs username and password, or api_token")
        return self

    def identity_key_material(self) -> str:
        for secret in (self.identity_secret, self.api_token, self.password):
            if secret is not None:
                return secret.get_secret_value()
        raise AssertionError("validated settings always hold a credential")
