"""An aiogram session that answers every Bot API call locally and records it.

For handler tests that need no HTTP: each call is recorded as (method name, parameters)
and answered with the smallest valid result. ``fail_next`` makes the next call of a
method raise instead.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Message


@dataclass
class Call:
    method: str
    params: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")


class RecordingSession(BaseSession):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self._ids = itertools.count(1000)
        self._failures: dict[str, list[Exception]] = {}
        self.channel_members: set[int] = set()
        """Users getChatMember finds in any channel (others have left it)."""

    def fail_next(self, method: str, error: Exception) -> None:
        self._failures.setdefault(method, []).append(error)

    def take(self) -> list[Call]:
        taken, self.calls = self.calls, []
        return taken

    async def close(self) -> None:
        pass

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - aiogram's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield b""

    def _params(self, bot: Bot, method: TelegramMethod[Any]) -> dict[str, Any]:
        """The parameters as they would go over the wire, JSON values decoded."""
        files: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared is None or prepared == "":
                continue
            try:
                params[key] = json.loads(prepared) if isinstance(prepared, str) else prepared
            except ValueError:
                params[key] = prepared
        for key in files:
            params.setdefault(key, "<file>")
        return params

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        name = method.__api_method__
        params = self._params(bot, method)
        self.calls.append(Call(name, params))
        pending = self._failures.get(name)
        if pending:
            raise pending.pop(0)
        returning = method.__returning__
        if returning is Message or name.startswith(("send", "edit")):
            chat_id = params.get("chat_id", 0)
            message = {
                "message_id": params.get("message_id") or next(self._ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": params.get("text"),
            }
            return Message.model_validate(message, context={"bot": bot})  # type: ignore[return-value]
        if name == "getMe":
            from aiogram.types import User

            return User(id=1, is_bot=True, first_name="Bot")  # type: ignore[return-value]
        if name == "getUpdates":
            return []  # type: ignore[return-value]
        if name == "getChatMember":
            from aiogram.types import ChatMemberLeft, ChatMemberMember, User

            user = User(id=params["user_id"], is_bot=False, first_name="Member")
            if params["user_id"] in self.channel_members:
                return ChatMemberMember(user=user)  # type: ignore[return-value]
            return ChatMemberLeft(user=user)  # type: ignore[return-value]
        return True  # type: ignore[return-value]
