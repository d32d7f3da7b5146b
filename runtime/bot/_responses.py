"""The Bot API answers the bot parses, built once per process.

aiogram parses every answer as ``Response[<the method's result type>]``, a parametrized
pydantic model. pydantic keeps those in a weak cache, so once nothing else holds one the
garbage collector takes it and the next call builds it again: the schema is rebuilt about
once every twenty calls under load (measured: 79 rebuilds in 1,539 calls, the largest
single CPU cost of answering an update after the handler itself). Holding them here keeps
them built.
"""

from __future__ import annotations

from typing import Any

from aiogram.methods import (
    AnswerCallbackQuery,
    AnswerPreCheckoutQuery,
    DeleteWebhook,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendInvoice,
    SendMessage,
    SendPhoto,
    SetMyCommands,
    TelegramMethod,
)
from aiogram.methods.base import Response

HOT_METHODS: tuple[type[TelegramMethod[Any]], ...] = (
    AnswerCallbackQuery,
    AnswerPreCheckoutQuery,
    DeleteWebhook,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendInvoice,
    SendMessage,
    SendPhoto,
    SetMyCommands,
)
"""The methods the bot calls while it serves updates."""

KEPT: tuple[type[Any], ...] = (
    *(
        Response[method.__returning__]  # type: ignore[name-defined]
        for method in HOT_METHODS
    ),
    Response[list[dict[str, Any]]],  # the poller's getUpdates, unparsed
)
