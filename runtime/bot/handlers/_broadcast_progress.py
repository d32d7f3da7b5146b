"""A broadcast's progress message: the admin's handlers send it, the bot actor keeps it
current while the broadcast runs (so the actor needs this, not the broadcast handlers)."""

from __future__ import annotations

from typing import Any

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from runtime.storage import broadcasts as store

from .. import keyboards as kb
from .._context import BotContext


def audience_name(ctx: BotContext, lang: str, segment: str, arg: str | None) -> str:
    key = f"broadcasts.segment_{segment}"
    if not ctx.translator.has(key):
        return segment
    return ctx.t(lang, key, arg=arg or "")


def progress_text(
    ctx: BotContext, lang: str, broadcast: store.Broadcast, progress: store.BroadcastProgress
) -> str:
    params: dict[str, Any] = {
        "id": broadcast.id,
        "audience": audience_name(ctx, lang, broadcast.audience, broadcast.audience_arg),
        "total": progress.total,
        "count": progress.total,
        "delivered": progress.delivered,
        "blocked": progress.blocked,
        "failed": progress.failed,
        "pending": progress.pending,
    }
    if broadcast.status == "cancelled":
        return ctx.t(lang, "admin.broadcast_cancelled_progress", **params)
    if progress.done:
        return ctx.t(lang, "admin.broadcast_done", **params)
    return ctx.t(lang, "admin.broadcast_progress", **params)


def broadcast_button(text: str, action: str, broadcast_id: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text=text, callback_data=kb.AdminCb(action=action, n=broadcast_id).pack()
    )


def progress_markup(ctx: BotContext, lang: str, broadcast_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                broadcast_button(ctx.t(lang, "admin.refresh_button"), "bc_show", broadcast_id),
                broadcast_button(ctx.t(lang, "admin.stop_button"), "bc_stop", broadcast_id),
            ],
            [kb.admin_back_button(ctx, lang)],
        ]
    )
