"""Broadcasts, for admins only (the router's filter lets everyone else fall through).

- ``/broadcast <segment> <text>``: the text is Telegram HTML; its last lines may be
  buttons (``[label](https://...)``, ``[buy]``, ``[renew]``). Sent as the caption of a
  photo, video, animation or document, or as a reply to one, the broadcast carries that
  file. The segment is ``all``, ``active``, ``inactive``, ``expired``, ``trial``,
  ``plan:<plan id>`` or ``lang:<code>``. Everything is checked first (HTML, lengths, URLs);
  then the admin gets the preview, exactly as users will see it, and the count of
  recipients with a button to confirm.
- Confirmed, the messages go out through the outbox; the progress message offers to stop.
- ``/broadcasts``: the latest broadcasts with their counts; each one's screen offers to
  delete its messages from the users' chats once it is over.
"""

from __future__ import annotations

import re
from typing import Any

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    Update,
)

from runtime.billing import PLANS_START_PARAMETER
from runtime.broadcasts import Content, ContentRefused, Media, markup, parse
from runtime.storage import broadcasts as store

from .. import keyboards as kb
from .._context import BotContext
from .._seam import call_trio
from ._broadcast_progress import audience_name, broadcast_button, progress_markup, progress_text
from ._common import IsAdmin, answer_quietly, show

BIGINT_MAX = 2**63 - 1
_DEEP_LINK = re.compile(r"\[\s*(?:buy|renew)\s*\]", re.IGNORECASE)
_ARGS = re.compile(r"(\S{1,100})\s*(.*)", re.DOTALL)


# -- texts ---------------------------------------------------------------------------------


def summary_text(ctx: BotContext, lang: str, found: store.Summary) -> str:
    broadcast, progress, deletion = found.broadcast, found.progress, found.deletion
    text = ctx.t(
        lang,
        "broadcasts.summary",
        id=broadcast.id,
        audience=audience_name(ctx, lang, broadcast.audience, broadcast.audience_arg),
        status=ctx.t(lang, f"broadcasts.status_{broadcast.status}"),
        date=ctx.date(broadcast.started_at or broadcast.created_at, lang=lang),
        total=progress.total,
        delivered=progress.delivered,
        blocked=progress.blocked,
        failed=progress.failed,
        cancelled=progress.cancelled,
        pending=progress.pending,
    )
    if deletion.total:
        text += "\n" + ctx.t(
            lang,
            "broadcasts.deletion",
            total=deletion.total,
            deleted=deletion.deleted,
            too_old=deletion.too_old,
            failed=deletion.failed,
            pending=deletion.pending,
        )
    return text


def summary_markup(ctx: BotContext, lang: str, found: store.Summary) -> InlineKeyboardMarkup:
    broadcast = found.broadcast
    rows = [[broadcast_button(ctx.t(lang, "admin.refresh_button"), "bc_show", broadcast.id)]]
    if broadcast.status == "sending":
        rows[0].append(broadcast_button(ctx.t(lang, "admin.stop_button"), "bc_stop", broadcast.id))
    elif broadcast.deletion_requested_at is None and found.progress.delivered:
        rows.append(
            [broadcast_button(ctx.t(lang, "broadcasts.delete_button"), "bc_del", broadcast.id)]
        )
    rows.append([kb.admin_back_button(ctx, lang)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def refused_text(ctx: BotContext, lang: str, refused: ContentRefused) -> str:
    key = f"broadcasts.refused_{refused.reason}"
    reason = ctx.t(lang, key, **refused.params) if ctx.translator.has(key) else refused.reason
    return ctx.t(lang, "broadcasts.refused", reason=reason)


# -- creating ------------------------------------------------------------------------------


def _audience(ctx: BotContext, token: str) -> tuple[str, str | None]:
    name, _, arg = token.partition(":")
    segment = store.SEGMENTS.get(name.lower())
    if segment is None:
        raise ContentRefused("segment", name=name[:32])
    if (segment.arg is None) != (arg == ""):
        raise ContentRefused("segment_arg", name=name.lower())
    if segment.arg is not None and not segment.arg.fullmatch(arg):
        raise ContentRefused("segment_arg", name=name.lower())
    if name.lower() == "plan" and ctx.catalog.find(arg) is None:
        raise ContentRefused("plan", plan=arg)
    return name.lower(), arg or None


def _media(message: Message) -> Media | None:
    for source in (message, message.reply_to_message):
        if source is None:
            continue
        if source.photo:
            return Media("photo", source.photo[-1].file_id)
        if source.video:
            return Media("video", source.video.file_id)
        if source.animation:  # before document: an animation's message carries both
            return Media("animation", source.animation.file_id)
        if source.document:
            return Media("document", source.document.file_id)
    return None


def user_markup(ctx: BotContext, lang: str, buttons: object) -> InlineKeyboardMarkup | None:
    """The buttons as a recipient who reads ``lang`` gets them."""
    found = markup(buttons, lambda kind: ctx.t(lang, f"broadcasts.button_{kind}"))
    return InlineKeyboardMarkup.model_validate(found) if found else None


async def send_preview(
    bot: Bot, chat_id: int, ctx: BotContext, lang: str, content: Content
) -> None:
    """The broadcast as its recipients will get it (the notifier sends the same)."""
    reply_markup = user_markup(ctx, lang, content.buttons)
    media = content.media
    if media is None:
        await bot.send_message(chat_id, content.text, parse_mode="HTML", reply_markup=reply_markup)
        return
    senders: dict[str, Any] = {
        "photo": bot.send_photo,
        "video": bot.send_video,
        "animation": bot.send_animation,
        "document": bot.send_document,
    }
    await senders[media.kind](
        chat_id,
        media.file_id,
        caption=content.text or None,
        parse_mode="HTML",
        reply_markup=reply_markup,
    )


async def broadcast_command(
    message: Message,
    command: CommandObject,
    event_update: Update,
    bot: Bot,
    ctx: BotContext,
    lang: str,
) -> None:
    assert message.from_user is not None
    back = kb.admin_back(ctx, lang)
    args = _ARGS.match((command.args or "").strip())
    if args is None:
        await message.answer(ctx.t(lang, "broadcasts.usage"), reply_markup=back)
        return
    token, body = args[1], args[2]
    deep_link = ""
    if _DEEP_LINK.search(body):
        me = await bot.me()
        deep_link = f"https://t.me/{me.username}?start={PLANS_START_PARAMETER}"
    try:
        segment, arg = _audience(ctx, token)
        content = parse(
            body,
            _media(message),
            deep_link=deep_link,
            max_buttons=ctx.settings.broadcasts.max_buttons,
        )
    except ContentRefused as refused:
        await message.answer(refused_text(ctx, lang, refused), reply_markup=back)
        return
    draft, reach = await call_trio(
        store.create_broadcast,
        ctx.svc.db,
        created_by=message.from_user.id,
        audience=segment,
        audience_arg=arg,
        text=content.text,
        html=True,
        media=(content.media.kind, content.media.file_id) if content.media else None,
        buttons=content.buttons,
        operation_key=f"update:{event_update.update_id}",
    )
    try:
        await send_preview(bot, message.chat.id, ctx, lang, content)
    except TelegramBadRequest as exc:
        text = ctx.t(lang, "broadcasts.preview_failed", reason=exc.message[:300])
        await message.answer(text, reply_markup=back)
        return
    await message.answer(
        ctx.t(
            lang,
            "broadcasts.ready",
            id=draft.id,
            audience=audience_name(ctx, lang, segment, arg),
            count=reach,
        ),
        reply_markup=kb.admin_confirm(
            ctx,
            lang,
            confirm=kb.AdminCb(action="bc_go", n=draft.id),
            cancel=kb.AdminCb(action="bc_stop", n=draft.id),
        ),
    )


# -- running, stopping, deleting ----------------------------------------------------------


def _broadcast_id(callback_data: kb.AdminCb) -> int | None:
    """The broadcast a button names, if it can name one (callback data is a door)."""
    return callback_data.n if 0 < callback_data.n <= BIGINT_MAX else None


async def _gone(query: CallbackQuery, ctx: BotContext, lang: str, broadcast_id: int) -> None:
    await answer_quietly(query, ctx.t(lang, "admin.broadcast_gone", id=broadcast_id))


async def broadcast_go(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    broadcast_id = _broadcast_id(callback_data)
    message = query.message
    broadcast = None
    if broadcast_id is not None:
        broadcast = await call_trio(
            store.start_broadcast,
            ctx.svc.db,
            broadcast_id,
            report_chat_id=query.from_user.id,
            report_message_id=message.message_id if message is not None else None,
            max_attempts=ctx.settings.notifier.max_attempts,
            by=query.from_user.id,
        )
    if broadcast is None:
        gone = ctx.t(lang, "admin.broadcast_gone", id=callback_data.n)
        await show(query, bot, gone, kb.admin_back(ctx, lang))
        return
    progress = store.BroadcastProgress(broadcast.total, broadcast.total, 0, 0, 0)
    await show(
        query,
        bot,
        progress_text(ctx, lang, broadcast, progress),
        progress_markup(ctx, lang, broadcast.id),
    )


async def broadcast_show(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    broadcast_id = _broadcast_id(callback_data)
    found = None
    if broadcast_id is not None:
        found = await call_trio(store.summary, ctx.svc.db, broadcast_id)
    if found is None:
        await _gone(query, ctx, lang, callback_data.n)
        return
    if found.broadcast.status == "sending" and not found.progress.done:
        text = progress_text(ctx, lang, found.broadcast, found.progress)
        await show(query, bot, text, progress_markup(ctx, lang, found.broadcast.id))
        return
    await show(query, bot, summary_text(ctx, lang, found), summary_markup(ctx, lang, found))


async def broadcast_stop(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    broadcast_id = _broadcast_id(callback_data)
    dropped = None
    if broadcast_id is not None:
        dropped = await call_trio(
            store.cancel_broadcast, ctx.svc.db, broadcast_id, by=query.from_user.id
        )
    if dropped is None:
        text = ctx.t(lang, "admin.broadcast_gone", id=callback_data.n)
    else:
        text = ctx.t(lang, "admin.broadcast_cancelled", id=callback_data.n, count=dropped)
    await show(query, bot, text, kb.admin_back(ctx, lang))


async def delete_asked(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    broadcast_id = _broadcast_id(callback_data)
    if broadcast_id is None:
        await _gone(query, ctx, lang, callback_data.n)
        return
    await show(
        query,
        bot,
        ctx.t(lang, "broadcasts.delete_confirm", id=broadcast_id),
        kb.admin_confirm(
            ctx,
            lang,
            confirm=kb.AdminCb(action="bc_del_yes", n=broadcast_id),
            cancel=kb.AdminCb(action="bc_show", n=broadcast_id),
        ),
    )


async def delete_confirmed(
    query: CallbackQuery, callback_data: kb.AdminCb, bot: Bot, ctx: BotContext, lang: str
) -> None:
    broadcast_id = _broadcast_id(callback_data)
    started = None
    if broadcast_id is not None:
        started = await call_trio(
            store.delete_messages,
            ctx.svc.db,
            broadcast_id,
            by=query.from_user.id,
            max_attempts=ctx.settings.notifier.max_attempts,
        )
    if started is None or broadcast_id is None:
        text = ctx.t(lang, "broadcasts.delete_refused", id=callback_data.n)
        await show(query, bot, text, kb.admin_back(ctx, lang))
        return
    if started.repeated:
        text = ctx.t(lang, "broadcasts.delete_repeated", id=broadcast_id)
    else:
        text = ctx.t(lang, "broadcasts.delete_queued", id=broadcast_id, count=started.queued)
    markup = InlineKeyboardMarkup(
        inline_keyboard=[
            [broadcast_button(ctx.t(lang, "admin.refresh_button"), "bc_show", broadcast_id)],
            [kb.admin_back_button(ctx, lang)],
        ]
    )
    await show(query, bot, text, markup)


# -- the list --------------------------------------------------------------------------------


def list_text(ctx: BotContext, lang: str, found: list[store.Summary]) -> str:
    if not found:
        return ctx.t(lang, "broadcasts.list_none")
    lines = [ctx.t(lang, "broadcasts.list_header")]
    for item in found:
        broadcast, progress = item.broadcast, item.progress
        lines.append(
            ctx.t(
                lang,
                "broadcasts.list_line",
                id=broadcast.id,
                date=ctx.date(broadcast.started_at or broadcast.created_at, lang=lang),
                audience=audience_name(ctx, lang, broadcast.audience, broadcast.audience_arg),
                status=ctx.t(lang, f"broadcasts.status_{broadcast.status}"),
                total=progress.total,
                delivered=progress.delivered,
                blocked=progress.blocked,
                failed=progress.failed,
                deleted=item.deletion.deleted,
            )
        )
    return "\n".join(lines)


async def list_command(message: Message, ctx: BotContext, lang: str) -> None:
    found = await call_trio(store.recent, ctx.svc.db, ctx.settings.broadcasts.listed)
    shown = [broadcast_button(f"#{i.broadcast.id}", "bc_show", i.broadcast.id) for i in found]
    rows = [shown[i : i + 5] for i in range(0, len(shown), 5)]
    rows.append([kb.admin_back_button(ctx, lang)])
    await message.answer(
        list_text(ctx, lang, found), reply_markup=InlineKeyboardMarkup(inline_keyboard=rows)
    )


def build_router() -> Router:
    router = Router(name="broadcasts")
    router.message.filter(IsAdmin())
    router.callback_query.filter(IsAdmin())
    router.message.register(broadcast_command, Command("broadcast"))
    router.message.register(list_command, Command("broadcasts"))
    router.callback_query.register(broadcast_go, kb.AdminCb.filter(F.action == "bc_go"))
    router.callback_query.register(broadcast_show, kb.AdminCb.filter(F.action == "bc_show"))
    router.callback_query.register(broadcast_stop, kb.AdminCb.filter(F.action == "bc_stop"))
    router.callback_query.register(delete_asked, kb.AdminCb.filter(F.action == "bc_del"))
    router.callback_query.register(delete_confirmed, kb.AdminCb.filter(F.action == "bc_del_yes"))
    return router
