"""``[plugins.settings.outline]``: where the Outline management API is and how to trust it.

The installer prints both values to copy::

    {"apiUrl":"https://203.0.113.7:37518/XjY3Zk...","certSha256":"A1B2..."}

``api_url`` is a secret: its path is the only credential of the API. Problems are reported
without its value.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .pinning import parse_fingerprint

Cipher = Literal["chacha20-ietf-poly1305", "aes-256-gcm", "aes-192-gcm", "aes-128-gcm"]
"""The Shadowsocks ciphers an Outline server accepts for new access keys."""
CIPHERS: tuple[str, ...] = get_args(Cipher)


class OutlineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    api_url: SecretStr
    """``https://host:port/<secret path>``, the installer's ``apiUrl``."""
    cert_sha256: str
    """The installer's ``certSha256``: 64 hex digits, colons allowed."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to the management API may take (> 0)."""
    method: Cipher | None = None
    """The cipher of new keys; the server's default (chacha20-ietf-poly1305) when unset."""

    @field_validator("api_url")
    @classmethod
    def _api_url_shape(cls, value: SecretStr) -> SecretStr:
        # The messages never quote the value: it holds the secret path.
        try:
            parts = urlsplit(value.get_secret_value().strip())
            port = parts.port
        except ValueError:
            raise ValueError("is not a URL (expected https://host:port/<secret path>)") from None
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host (the installer's apiUrl)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user or password")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or a fragment")
        if not parts.path.strip("/"):
            raise ValueError("must end with the secret path: https://host:port/<secret path>")
        if port == 0:
            raise ValueError("has port 0")
        return SecretStr(value.get_secret_value().strip().rstrip("/"))

    @field_validator("cert_sha256")
    @classmethod
    def _fingerprint_shape(cls, value: str) -> str:
        return parse_fingerprint(value).hex()

    def api_url_value(self) -> str:
        return self.api_url.get_secret_value()
