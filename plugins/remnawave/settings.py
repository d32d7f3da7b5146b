"""``[plugins.settings.remnawave]``: where the panel is, its API token, what users get."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

TrafficStrategy = Literal["NO_RESET", "DAY", "WEEK", "MONTH", "MONTH_ROLLING"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _uuid(value: str) -> str:
    if not _UUID.fullmatch(value):
        raise ValueError("must be a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6")
    return value.lower()


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Uuid = Annotated[str, AfterValidator(_uuid)]


class RemnawaveSettings(BaseModel):
    """The plugin's table, for example::

    [plugins.settings.remnawave]
    base_url = "https://panel.example.com"
    api_token = "..."   # or the credential file plugins.settings.remnawave.api_token
    internal_squads = ["3fa85f64-5717-4562-b3fc-2c963f66afa6"]
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    base_url: HttpUrl
    """The panel's address (its API lives under ``/api``). A plain ``http://`` address
    reaches the panel without its reverse proxy; the plugin then sends the forwarding
    headers the panel insists on."""
    api_token: SecretStr
    """An API token made in the panel (Remnawave settings, API tokens)."""
    api_key: SecretStr | None = None
    """Sent as ``X-Api-Key``, for panels behind a proxy that asks for one."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Seconds each call to the panel may take (> 0)."""
    internal_squads: Annotated[list[Uuid], Field(min_length=1)]
    """Internal squads (their UUIDs) every user is in: a user in none gets no inbound."""
    traffic_limit_strategy: TrafficStrategy = "NO_RESET"
    """How often the panel itself resets a user's traffic: ``NO_RESET`` leaves it to the
    bot, which resets it at each paid period."""
