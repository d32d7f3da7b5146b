from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from runtime.failures import TELEGRAM, DependencyError
from runtime.plugin_api.peer import PeerClient, retry_after_seconds

_EVERY_STATUS = range(100, 600)
DEFAULT_RETRY_AFTER = 1.0
"""Seconds to wait after a 429 that names no delay."""


class TooManyRequests(DependencyError):
    """429: Telegram's flood control. Nothing may be sent for ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, transient=True, retry_after=retry_after, dependency=TELEGRAM)


class ChatBlocked(DependencyError):
    """403: this chat cannot be written to (the user blocked the bot, deleted their
    account, never started it, or the bot left the group). Retrying cannot help."""

    def __init__(self, message: str, *, chat_id: int | str) -> None:
        super().__init__(message, transient=False)
        self.chat_id = chat_id


class BotTokenRejected(DependencyError):
    """401 (or 404 for every method): the bot token is wrong or revoked. Nothing can be
    sent by this bot until an operator fixes the configuration; no message is to blame."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False, dependency=TELEGRAM)


class BotApi(PeerClient):
    """The Bot API methods the notifier calls.

    Answers are mapped once, here:

    - ``{"ok": true}``: the ``result`` is returned;
    - 429: ``TooManyRequests`` (transient) with ``retry_after`` from
      ``parameters.retry_after`` (else the ``Retry-After`` header, else one second);
    - 403: ``ChatBlocked`` (permanent, for this chat only);
    - 401, and 404 (the answer to a malformed token): ``BotTokenRejected``;
    - 5xx, network errors, timeouts and unreadable answers: transient ``DependencyError``;
    - any other 4xx ("Bad Request: message is too long", "chat not found"...): a permanent
      ``DependencyError``.

    The token is part of the base URL (``{api_base}/bot<token>/``). It is registered as a
    secret: every message built here is scrubbed, and httpx's own errors, which quote the
    URL, are never chained (``PeerClient.request``).
    """

    peer = "telegram"

    def __init__(
        self,
        token: str,
        *,
        api_base: str = "https://api.telegram.org",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("a Bot API client needs the bot token")
        super().__init__(
            f"{api_base.rstrip('/')}/bot{token}/",
            timeout=timeout,
            secrets=[token],
            transport=transport,
        )

    def __repr__(self) -> str:
        return "BotApi()"

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        chat_id: int | str | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> Any:
        """Call ``method``; with ``files`` the parameters go as a multipart form.

        ``chat_id`` only names the chat in a ``ChatBlocked``."""
        if files:
            form = {
                key: value if isinstance(value, str) else json.dumps(value)
                for key, value in (params or {}).items()
            }
            response = await self.request(
                "POST", method, accept=_EVERY_STATUS, data=form, files=dict(files)
            )
        else:
            response = await self.request("POST", method, accept=_EVERY_STATUS, json=params or {})
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if response.is_success and isinstance(envelope, dict) and envelope.get("ok") is True:
            return envelope.get("result")
        raise self._error(method, response, envelope, chat_id)

    def _error(
        self, method: str, response: httpx.Response, envelope: object, chat_id: int | str | None
    ) -> DependencyError:
        status = response.status_code
        if not isinstance(envelope, dict):
            return DependencyError(
                f"{self.peer}: {method} answered HTTP {status} with something not JSON",
                transient=status >= 500 or status < 400,
                dependency=TELEGRAM if status >= 500 else None,
            )
        code = envelope.get("error_code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = status
        description = self.scrub(str(envelope.get("description") or f"HTTP {code}"))[:200]
        message = f"{self.peer}: {method}: {description}"
        hint = _parameter_retry_after(envelope)
        if code == 429:
            retry_after = hint if hint is not None else retry_after_seconds(response)
            return TooManyRequests(
                message, retry_after=DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            )
        if code == 403:
            return ChatBlocked(message, chat_id=chat_id if chat_id is not None else "?")
        if code in (401, 404):
            return BotTokenRejected(message)
        if code >= 500 or code < 400:
            return DependencyError(message, transient=True, retry_after=hint, dependency=TELEGRAM)
        return DependencyError(message, transient=False)

    # -- methods ----------------------------------------------------------------------

    async def send_message(
        self,
        chat_id: int | str,
        text: str,
        reply_markup: Mapping[str, Any] | None = None,
        allow_paid_broadcast: bool = False,
        *,
        disable_link_preview: bool = True,
        parse_mode: str | None = None,
    ) -> dict[str, Any]:
        """``sendMessage``; plain text unless ``parse_mode`` ("HTML") is given."""
        params: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if parse_mode is not None:
            params["parse_mode"] = parse_mode
        if reply_markup is not None:
            params["reply_markup"] = dict(reply_markup)
        if allow_paid_broadcast:
            params["allow_paid_broadcast"] = True
        if disable_link_preview:
            params["link_preview_options"] = {"is_disabled": True}
        result: dict[str, Any] = await self.call("sendMessage", params, chat_id=chat_id)
        return result

    async def send_photo(
        self,
        chat_id: int | str,
        png_bytes: bytes,
        caption: str | None = None,
        *,
        reply_markup: Mapping[str, Any] | None = None,
        allow_paid_broadcast: bool = False,
        filename: str = "qr.png",
    ) -> dict[str, Any]:
        """``sendPhoto`` with the image uploaded from memory."""
        params: dict[str, Any] = {"chat_id": str(chat_id)}
        if caption:
            params["caption"] = caption
        if reply_markup is not None:
            params["reply_markup"] = dict(reply_markup)
        if allow_paid_broadcast:
            params["allow_paid_broadcast"] = "true"
        result: dict[str, Any] = await self.call(
            "sendPhoto",
            params,
            chat_id=chat_id,
            files={"photo": (filename, png_bytes, "image/png")},
        )
        return result

    async def send_media(
        self,
        chat_id: int | str,
        kind: str,
        file_id: str,
        caption: str | None = None,
        *,
        reply_markup: Mapping[str, Any] | None = None,
        parse_mode: str | None = None,
        allow_paid_broadcast: bool = False,
    ) -> dict[str, Any]:
        """``sendPhoto``, ``sendVideo``, ``sendAnimation`` or ``sendDocument`` (``kind``)
        of a file Telegram already has (its ``file_id``)."""
        if kind not in MEDIA_METHODS:
            raise ValueError(f"no media kind {kind!r}")
        params: dict[str, Any] = {"chat_id": chat_id, kind: file_id}
        if caption:
            params["caption"] = caption
            if parse_mode is not None:
                params["parse_mode"] = parse_mode
        if reply_markup is not None:
            params["reply_markup"] = dict(reply_markup)
        if allow_paid_broadcast:
            params["allow_paid_broadcast"] = True
        result: dict[str, Any] = await self.call(MEDIA_METHODS[kind], params, chat_id=chat_id)
        return result

    async def delete_message(self, chat_id: int | str, message_id: int) -> bool:
        """``deleteMessage``. Telegram refuses (400 "message can't be deleted") once a
        message is older than 48 hours."""
        params = {"chat_id": chat_id, "message_id": message_id}
        return bool(await self.call("deleteMessage", params, chat_id=chat_id))


MEDIA_METHODS = {
    "photo": "sendPhoto",
    "video": "sendVideo",
    "animation": "sendAnimation",
    "document": "sendDocument",
}


def _parameter_retry_after(envelope: Mapping[str, Any]) -> float | None:
    parameters = envelope.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
