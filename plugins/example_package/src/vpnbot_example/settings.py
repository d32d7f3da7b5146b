"""``[plugins.settings.example]``: the tiny panel and the chat webhook for alerts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class ExampleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    panel_url: str
    """The panel's address."""
    panel_token: SecretStr
    """The panel's API token."""
    chat_webhook_url: str | None = None
    """Where alerts are posted; unset: no alert sink."""
    timeout_seconds: float = 10.0
    """Seconds each call to the panel may take."""
