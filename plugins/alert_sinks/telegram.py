"""An alert sink that sends each alert as a Telegram message to admin chats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from runtime.alerts import Alert, AlertDeliveryError
from runtime.plugin_api.peer import shared_tls_context

from .webhook import _redact

MESSAGE_LIMIT = 4096
"""Telegram's limit on a message's text, in characters."""


def format_alert(alert: Alert) -> str:
    """Plain text (no parse mode, nothing to escape), cut to Telegram's limit."""
    lines = [f"[{alert.severity.value.upper()}] {alert.title}", "", alert.text, ""]
    lines.append(f"component: {alert.component}")
    lines.append(f"key: {alert.key}")
    if alert.correlation_id:
        lines.append(f"correlation id: {alert.correlation_id}")
    lines.append(f"time: {alert.time.isoformat(timespec='seconds')}")
    if alert.suppressed_count:
        lines.append(f"(+{alert.suppressed_count} similar suppressed since the last one)")
    text = "\n".join(lines)
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 1] + "…"
    return text


class TelegramSink:
    """Calls the Bot API ``sendMessage`` for every chat in ``chat_ids``.

    Every chat is tried; the alert fails when any chat failed (an HTTP error, a non-2xx
    answer, or ``{"ok": false}``). The bot token is part of the request URL, so errors are
    rewritten to never contain it.
    """

    def __init__(
        self,
        token: str,
        chat_ids: Sequence[int],
        *,
        api_base: str = "https://api.telegram.org",
        timeout: float = 10.0,
        name: str = "telegram",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("a Telegram alert sink needs a bot token")
        if not chat_ids:
            raise ValueError("a Telegram alert sink needs at least one chat id")
        self.name = name
        self._token = token
        self._chat_ids = list(chat_ids)
        self._url = f"{api_base.rstrip('/')}/bot{token}/sendMessage"
        self._timeout = timeout
        self._transport = transport

    def __repr__(self) -> str:
        return f"TelegramSink(name={self.name!r}, chats={len(self._chat_ids)})"

    @property
    def chat_ids(self) -> list[int]:
        return list(self._chat_ids)

    async def send(self, alert: Alert) -> None:
        text = format_alert(alert)
        failures: list[str] = []
        async with httpx.AsyncClient(
            timeout=self._timeout, transport=self._transport, verify=shared_tls_context()
        ) as client:
            for chat_id in self._chat_ids:
                error = await self._send_one(client, chat_id, text)
                if error is not None:
                    failures.append(f"chat {chat_id}: {error}")
        if failures:
            raise AlertDeliveryError(
                f"telegram sendMessage failed for {len(failures)} of {len(self._chat_ids)} "
                f"chats: {'; '.join(failures)}"
            )

    async def _send_one(self, client: httpx.AsyncClient, chat_id: int, text: str) -> str | None:
        """None on success, else a description without the token."""
        try:
            response = await client.post(self._url, json={"chat_id": chat_id, "text": text})
        except httpx.HTTPError as exc:
            message = _redact(str(exc), [self._token]) or "no detail"
            return f"{type(exc).__name__}: {message}"
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        description = ""
        if isinstance(payload, dict) and isinstance(payload.get("description"), str):
            description = _redact(payload["description"], [self._token])
        if not response.is_success:
            return f"HTTP {response.status_code}" + (f" ({description})" if description else "")
        if not isinstance(payload, dict) or payload.get("ok") is not True:
            return "answer not ok" + (f" ({description})" if description else "")
        return None
