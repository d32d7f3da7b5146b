"""Small helpers the handlers share: the admins' filter, showing a screen, answering a button
quietly."""

from __future__ import annotations

import contextlib

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Filter
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, TelegramObject
from aiogram.types import User as TelegramUser

from .._context import BotContext


class IsAdmin(Filter):
    """Lets through the updates of the ids in ``telegram.admin_chat_ids`` only."""

    async def __call__(
        self,
        event: TelegramObject,
        ctx: BotContext,
        event_from_user: TelegramUser | None = None,
    ) -> bool:
        return ctx.is_admin(event_from_user.id if event_from_user is not None else None)


def not_modified(exc: TelegramBadRequest) -> bool:
    return "not modified" in exc.message.lower()


async def answer_quietly(query: CallbackQuery, text: str | None = None) -> None:
    """Stop the button's spinner; a query that is too old (after a restart) is fine."""
    with contextlib.suppress(TelegramBadRequest):
        await query.answer(text)


async def show(
    query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Show a screen in place of the message whose button was pressed, or as a new
    message when that one cannot be edited (an invoice, a photo, a message too old)."""
    await answer_quietly(query)
    message = query.message
    if isinstance(message, Message) and message.text is not None:
        try:
            await message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest as exc:
            if not_modified(exc):
                return
    chat_id = message.chat.id if message is not None else query.from_user.id
    await bot.send_message(chat_id, text, reply_markup=markup)


async def edit_quietly(
    bot: Bot,
    chat_id: int,
    message_id: int,
    text: str,
    markup: InlineKeyboardMarkup | None = None,
) -> bool:
    """Edit a message; False when Telegram refuses (deleted, too old). Unchanged is fine."""
    try:
        await bot.edit_message_text(
            text=text, chat_id=chat_id, message_id=message_id, reply_markup=markup
        )
    except TelegramBadRequest as exc:
        return not_modified(exc)
    return True
