from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class ExampleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    panel_url: str
    panel_token: SecretStr
    chat_webhook_url: str | None = None
    timeout_seconds: float = 10.0
